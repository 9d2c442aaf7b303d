"""The model registry: named weights files, the default model, and lookup by fingerprint.

Models are plain raybb weights files (``raybb.model.weights``) named ``<name>.safetensors`` in a
registry directory, optionally with a ``<name>.json`` sidecar holding measured Kodak numbers::

    {"kodak_bpp": 0.31, "kodak_psnr": 30.2, "kodak_ms_ssim": 0.962, ...anything else...}

(a nested ``{"kodak": {"bpp": ..., "psnr": ..., "ms_ssim": ...}}`` is read too, and so are the same
keys inside the weights' own ``meta``; the sidecar wins). A variable-rate model's curve is a list
of points, one per measured quality::

    {"kodak_curve": [{"quality": 1.0, "rate": 0, "bpp": 0.12, "psnr": 27.9, "ms_ssim": 0.93}, ...]}

A family of fixed-rate models at several rates is named ``<family>-q1`` … ``<family>-qN`` with q1
the lowest rate, so ``--quality N`` means "qN of the default family". When the default model is
variable-rate, ``--quality`` is instead any float in its range (raybb.levels.QUALITY_MIN ..
QUALITY_MAX), and the integers are names for points on it (``resolve_quality``).

Directories searched, in order (the first holder of a name wins):

1. ``raybb/weights/`` inside the package: the shipped models (read-only).
2. Every directory in ``$RAYBB_MODELS_DIR`` (``os.pathsep``-separated): user registries; sweeps
   register their models into one of these with ``register_model``.

The default model (``resolve_model(None)``) is, in order: ``$RAYBB_DEFAULT_MODEL`` (a name or a
path); the name written in ``raybb/weights/DEFAULT`` (one line, shipped with the package); else the
middle-rate member of the first family found. Listing reads headers only (``read_metadata``): cheap
enough for ``raybb models`` and for the decoder's fingerprint lookup. Files that are not valid
raybb weights are skipped when listing (and logged), and rejected with ``WeightsError`` when named
directly.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from raybb.errors import ModelError, WeightsError
from raybb.model.weights import FINGERPRINT_BYTES, load_weights, read_metadata

__all__ = [
    "ModelInfo",
    "SHIPPED_DIR",
    "MODELS_DIR_ENV",
    "DEFAULT_MODEL_ENV",
    "registry_dirs",
    "list_models",
    "resolve_model",
    "resolve_quality",
    "find_by_fingerprint",
    "register_model",
    "default_model_name",
]

log = logging.getLogger(__name__)

#: Shipped weights live next to this module (package data).
SHIPPED_DIR = Path(__file__).resolve().parent / "weights"
MODELS_DIR_ENV = "RAYBB_MODELS_DIR"
DEFAULT_MODEL_ENV = "RAYBB_DEFAULT_MODEL"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_QUALITY_RE = re.compile(r"^(?P<family>.+)-q(?P<q>[0-9]+)$")


@dataclass(frozen=True)
class ModelInfo:
    """One registered model, from its weights header and sidecar (the model is not built)."""

    name: str
    path: Path
    fingerprint: str  # full hex SHA-256 (bitstreams carry its first 8 bytes)
    variant: str | None = None  # "pln" or "gamma-pln"
    beta: float | None = None
    kodak_bpp: float | None = None
    kodak_psnr: float | None = None
    kodak_ms_ssim: float | None = None
    source: str = "shipped"  # "shipped" or "user"
    arch: str = "pln"  # the architecture (raybb.model.arch)
    rate_levels: int = 0  # 0: fixed rate; else the rate indices its streams may carry
    beta_range: tuple[float, float] | None = None  # (beta_min, beta_max) of a variable-rate model
    kodak_curve: tuple[dict, ...] = ()  # measured Kodak points of a variable-rate model (sidecar)

    @property
    def quality_range(self) -> tuple[float, float] | None:
        """The ``--quality`` range of a variable-rate model (None: fixed rate, see ``quality``)."""
        from raybb.levels import QUALITY_MAX, QUALITY_MIN

        return (QUALITY_MIN, QUALITY_MAX) if self.rate_levels else None

    @property
    def family(self) -> str:
        m = _QUALITY_RE.match(self.name)
        return m.group("family") if m else self.name

    @property
    def quality(self) -> int | None:
        m = _QUALITY_RE.match(self.name)
        return int(m.group("q")) if m else None

    @property
    def short_fingerprint(self) -> bytes:
        return bytes.fromhex(self.fingerprint)[:FINGERPRINT_BYTES]


def registry_dirs() -> list[tuple[Path, str]]:
    """``(directory, source)`` pairs in search order: the shipped dir, then ``$RAYBB_MODELS_DIR``."""
    dirs = [(SHIPPED_DIR, "shipped")]
    for part in os.environ.get(MODELS_DIR_ENV, "").split(os.pathsep):
        if part.strip():
            dirs.append((Path(part).expanduser().resolve(), "user"))
    return dirs


def _float_or_none(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _kodak_fields(d: dict) -> dict:
    """Pull kodak_bpp/psnr/ms_ssim out of a flat or nested ``{"kodak": {...}}`` dict."""
    out = {}
    nested = d.get("kodak") if isinstance(d.get("kodak"), dict) else {}
    for key in ("bpp", "psnr", "ms_ssim"):
        v = d.get(f"kodak_{key}", nested.get(key))
        if v is not None:
            out[f"kodak_{key}"] = _float_or_none(v)
    return out


def _read_sidecar(path: Path) -> dict:
    side = path.with_suffix(".json")
    if not side.exists():
        return {}
    try:
        d = json.loads(side.read_text())
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable sidecar %s: %s", side, e)
        return {}
    return d if isinstance(d, dict) else {}


def _info(path: Path, source: str) -> ModelInfo:
    """Header + sidecar of one weights file; raises ``WeightsError`` if it is not raybb weights."""
    md = read_metadata(path)
    meta = md["meta"] if isinstance(md["meta"], dict) else {}
    fp = md["fingerprint"]
    if not isinstance(fp, str) or not re.fullmatch(r"[0-9a-f]{64}", fp):
        raise WeightsError(f"{path}: bad fingerprint in header")
    kodak = _kodak_fields(meta)
    kodak.update({k: v for k, v in _kodak_fields(_read_sidecar(path)).items() if v is not None})
    arch, config = md.get("arch", "pln"), md["config"]
    variant = meta.get("variant")
    if variant is None:
        variant = ("gamma-pln" if config.learn_scale else "pln") if arch == "pln" else arch
    rate_levels = int(getattr(config, "rate_levels", 0) or 0)
    side = _read_sidecar(path)
    return ModelInfo(
        name=path.name[: -len(".safetensors")],
        path=path,
        fingerprint=fp,
        variant=str(variant),
        beta=_float_or_none(meta.get("beta")),
        source=source,
        arch=arch,
        rate_levels=rate_levels,
        beta_range=(float(config.beta_min), float(config.beta_max)) if rate_levels else None,
        kodak_curve=_curve(side.get("kodak_curve", meta.get("kodak_curve"))),
        **kodak,
    )


def _curve(points) -> tuple[dict, ...]:
    """The well-formed points of a ``kodak_curve`` list, by quality (anything else is ignored)."""
    if not isinstance(points, list):
        return ()
    out = []
    for pt in points:
        if not isinstance(pt, dict):
            continue
        row = {k: _float_or_none(pt.get(k)) for k in ("quality", "bpp", "psnr", "ms_ssim")}
        if row["bpp"] is None:
            continue
        if isinstance(pt.get("rate"), int):
            row["rate"] = pt["rate"]
        out.append(row)
    return tuple(sorted(out, key=lambda r: (r["quality"] is None, r["quality"] or 0.0, r["bpp"])))


def _sort_key(info: ModelInfo) -> tuple:
    q = info.quality
    return (info.family, 0 if q is not None else 1, q or 0, info.name)


def list_models(dirs: list[tuple[Path, str]] | None = None) -> list[ModelInfo]:
    """Every valid model in the registry dirs, grouped by family and ordered by quality (q1 first).

    A name found in an earlier directory shadows the same name later (shipped before user).
    """
    seen: dict[str, ModelInfo] = {}
    for directory, source in dirs if dirs is not None else registry_dirs():
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.safetensors")):
            name = path.name[: -len(".safetensors")]
            if name in seen or not _NAME_RE.match(name):
                continue
            try:
                seen[name] = _info(path, source)
            except WeightsError as e:
                log.warning("skipping %s: %s", path, e)
    return sorted(seen.values(), key=_sort_key)


def default_model_name(models: list[ModelInfo] | None = None) -> str:
    """Name (or path) of the default model; raises ``ModelError`` when there is none."""
    env = os.environ.get(DEFAULT_MODEL_ENV, "").strip()
    if env:
        return env
    marker = SHIPPED_DIR / "DEFAULT"
    if marker.is_file():
        name = marker.read_text().strip()
        if name:
            return name
    models = list_models() if models is None else models
    if not models:
        raise ModelError(
            "no models are installed: the package ships none yet and "
            f"${MODELS_DIR_ENV} names no registry with models. Pass a .safetensors path, "
            f"or set ${MODELS_DIR_ENV} to a directory of registered models."
        )
    family = models[0].family
    members = [m for m in models if m.family == family]
    return members[(len(members) - 1) // 2].name


def _as_quality(x: str | int) -> int | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, int):
        return x
    s = x.strip()
    if s.isdigit():
        return int(s)
    if len(s) > 1 and s[0] in "qQ" and s[1:].isdigit():
        return int(s[1:])
    return None


def resolve_model(name_or_path_or_quality: str | int | os.PathLike | None = None) -> Path:
    """Path of the weights file meant by a registry name, a quality, a file path, or None (default).

    * ``None``           the default model (see module docstring);
    * ``3`` / ``"3"`` / ``"q3"``  q3 of the default model's family (``--quality 3``);
    * ``"pln-q2"``       a registered name;
    * ``"a/b.safetensors"``  an existing file (validated when loaded, not here).

    Raises ``ModelError`` naming what is available when nothing matches.
    """
    x = name_or_path_or_quality
    if isinstance(x, os.PathLike):
        x = os.fspath(x)
    if isinstance(x, str) and x.strip() and (x.endswith(".safetensors") or os.sep in x or "/" in x):
        p = Path(x).expanduser()
        if p.is_file():
            return p.resolve()
        raise ModelError(f"weights file not found: {x}")
    models = list_models()
    by_name = {m.name: m for m in models}
    if x is None or (isinstance(x, str) and not x.strip()):
        default = default_model_name(models)
        if default in by_name:
            return by_name[default].path
        p = Path(default).expanduser()
        if p.is_file():
            return p.resolve()
        known = sorted(by_name) or "none"
        raise ModelError(f"the default model {default!r} is not installed (known: {known})")
    q = _as_quality(x)
    if q is not None:
        if q < 1:
            raise ModelError(f"quality must be >= 1, got {q}")
        default = default_model_name(models)
        if default in by_name:
            family = by_name[default].family
        else:
            stem = Path(default).name.removesuffix(".safetensors")
            m = _QUALITY_RE.match(stem)
            family = m.group("family") if m else stem
        qualities = sorted(m.quality for m in models if m.family == family and m.quality is not None)
        if f"{family}-q{q}" in by_name:
            return by_name[f"{family}-q{q}"].path
        raise ModelError(f"no quality {q} in model family {family!r} (available: {qualities or 'none'})")
    if x in by_name:
        return by_name[x].path
    p = Path(x).expanduser()
    if p.is_file():
        return p.resolve()
    raise ModelError(f"unknown model {x!r} (known: {', '.join(sorted(by_name)) or 'none installed'})")


def resolve_quality(quality: float | int | str) -> tuple[Path, float | None]:
    """(weights path, quality for that model) for ``--quality`` without ``--model``.

    When the default model is variable-rate, ``quality`` is any float in its range and the model is
    the default one; otherwise it must be an integer N and picks the default family's qN (as
    ``resolve_model(N)``; the quality for the model is then None)."""
    from raybb.levels import QUALITY_MAX, QUALITY_MIN

    try:
        q = float(quality.strip().lstrip("qQ")) if isinstance(quality, str) else float(quality)
    except (TypeError, ValueError):
        raise ModelError(f"quality must be a number, got {quality!r}") from None
    models = list_models()
    by_name = {m.name: m for m in models}
    default = default_model_name(models)
    info = by_name.get(default)
    if info is None and Path(default).expanduser().is_file():
        info = _info(Path(default).expanduser().resolve(), "user")
    if info is not None and info.rate_levels:
        if not QUALITY_MIN <= q <= QUALITY_MAX:
            raise ModelError(f"quality must be in {QUALITY_MIN:g}..{QUALITY_MAX:g} for {info.name}, got {quality!r}")
        return info.path, q
    if not q.is_integer():
        raise ModelError(
            f"the default model family has qualities 1, 2, ... only (one model each), got {quality!r}; "
            "fractional qualities need a variable-rate model"
        )
    return resolve_model(int(q)), None


def find_by_fingerprint(fp_prefix: bytes | str) -> Path | None:
    """The registered model whose fingerprint starts with ``fp_prefix`` (bytes or hex), or None.

    The decoder calls this with the 8 fingerprint bytes a bitstream carries. Raises ``ModelError``
    if two *different* models match (only possible for a too-short prefix).
    """
    prefix = fp_prefix.hex() if isinstance(fp_prefix, bytes | bytearray) else str(fp_prefix).lower()
    if not prefix:
        raise ValueError("empty fingerprint prefix")
    hits = [m for m in list_models() if m.fingerprint.startswith(prefix)]
    if not hits:
        return None
    if len({m.fingerprint for m in hits}) > 1:
        raise ModelError(f"fingerprint prefix {prefix} is ambiguous: {[m.name for m in hits]}")
    return hits[0].path


def _default_user_dir() -> Path:
    for part in os.environ.get(MODELS_DIR_ENV, "").split(os.pathsep):
        if part.strip():
            return Path(part).expanduser()
    raise ModelError(f"no registry_dir given and ${MODELS_DIR_ENV} is not set")


def register_model(
    weights_path: str | os.PathLike,
    name: str,
    registry_dir: str | os.PathLike | None = None,
    kodak_metrics: dict | None = None,
    *,
    extra: dict | None = None,
    overwrite: bool = False,
) -> ModelInfo:
    """Copy a weights file into a registry dir as ``<name>.safetensors`` (+ sidecar ``<name>.json``).

    The file is fully loaded first (fingerprint verified), so corrupt or foreign files never enter
    a registry. ``registry_dir`` defaults to the first ``$RAYBB_MODELS_DIR`` entry, never to the
    package. Registering the same weights under the same name again is a no-op (sweeps re-register
    on resume); a *different* model under an existing name needs ``overwrite=True``.
    ``kodak_metrics`` takes ``bpp``/``psnr``/``ms_ssim`` (or ``kodak_*``) keys; ``extra`` is stored
    in the sidecar as is (e.g. the sweep's validation metrics).
    """
    if not _NAME_RE.match(name) or name.endswith(".safetensors"):
        raise ModelError(f"bad model name {name!r}: use letters, digits, '.', '_' and '-'")
    src = Path(weights_path)
    loaded = load_weights(src)  # raises WeightsError on anything that is not valid raybb weights
    reg = Path(registry_dir).expanduser() if registry_dir is not None else _default_user_dir()
    if reg.resolve() == SHIPPED_DIR:
        raise ModelError("refusing to register into the package's shipped weights directory")
    reg.mkdir(parents=True, exist_ok=True)
    dst = reg / f"{name}.safetensors"
    if dst.exists() and not overwrite:
        try:
            same = read_metadata(dst)["fingerprint"] == loaded.fingerprint
        except WeightsError:
            same = False
        if not same:
            raise ModelError(f"{dst} already holds a different model (pass overwrite=True to replace it)")
    if not dst.exists() or src.resolve() != dst.resolve():
        with tempfile.NamedTemporaryFile(dir=reg, prefix=f".{name}.", suffix=".tmp", delete=False) as tmp:
            tmp_path = Path(tmp.name)
        try:
            shutil.copyfile(src, tmp_path)
            tmp_path.replace(dst)
        finally:
            tmp_path.unlink(missing_ok=True)
    side: dict = {}
    if kodak_metrics:
        km = {k if k.startswith("kodak_") else f"kodak_{k}": v for k, v in kodak_metrics.items()}
        side.update({k: _float_or_none(v) for k, v in km.items()})
    if extra:
        side.update(extra)
    side_path = dst.with_suffix(".json")
    if side:
        tmp_side = side_path.with_name(side_path.name + ".tmp")
        tmp_side.write_text(json.dumps(side, indent=2, sort_keys=True, default=str))
        tmp_side.replace(side_path)
    elif side_path.exists() and overwrite:
        side_path.unlink()
    return _info(dst, "user")
