"""Model weights on disk: safetensors + metadata + a fingerprint that bitstreams carry.

A weights file is a plain ``.safetensors`` file (no pickle: safe to open from anyone) whose
header metadata holds:

* ``raybb.format``      "1"
* ``raybb.arch``        the architecture's registry name (``raybb.model.arch``); absent = "pln",
                        the original two-level PLN, so files written before the registry load
                        unchanged and keep their fingerprints
* ``raybb.config``      the architecture's config dataclass as JSON
* ``raybb.meta``        free-form JSON (β, steps, dataset fingerprint, Kodak metrics, ...)
* ``raybb.fingerprint`` hex SHA-256 over the architecture (its name, for any other than "pln",
                        and its config JSON) and every tensor (name, dtype, shape, bytes), sorted
                        by name.

Tensors are stored as float32 (training checkpoints) or float16 (shipped weights: half the
size, and measured on Kodak to move PSNR by ≤ 0.002 dB and the rate by ≤ 0.0001 bpp, since every
parameter is ≤ 3 in magnitude). Either way the network is built and run in float32: float16 →
float32 is exact, so a float16 file decodes the same on every machine.

The fingerprint is recomputed on load: a flipped byte, a truncated file, or tensors that do not
match the stored architecture raise ``WeightsError``. Bitstreams carry the first 8 bytes of the
fingerprint, so a file is never decoded with a model other than the one that wrote it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load_bytes
from safetensors.torch import save as st_save_bytes

from raybb.errors import WeightsError
from raybb.model.arch import DEFAULT_ARCH, MAX_CHANNELS, arch_of, get_architecture
from raybb.model.ladder import LadderConfig, LadderNetwork

__all__ = [
    "LoadedModel",
    "fingerprint",
    "save_weights",
    "load_weights",
    "read_metadata",
    "FORMAT_VERSION",
    "STORAGE_DTYPES",
    "lineage",
    "MAX_CHANNELS",
]

FORMAT_VERSION = "1"
FINGERPRINT_BYTES = 8  # the part of the fingerprint written into bitstreams
#: dtypes a weights file may store its tensors in (the model always runs in float32)
STORAGE_DTYPES = (torch.float32, torch.float16)


@dataclass
class LoadedModel:
    model: LadderNetwork  # or any registered architecture (raybb.model.protocol.LatentModel)
    config: LadderConfig  # that architecture's config dataclass
    meta: dict = field(default_factory=dict)
    fingerprint: str = ""  # full hex sha256
    arch: str = DEFAULT_ARCH

    @property
    def short_fingerprint(self) -> bytes:
        return bytes.fromhex(self.fingerprint)[:FINGERPRINT_BYTES]


def fingerprint(state: dict[str, torch.Tensor], config, arch: str = DEFAULT_ARCH) -> str:
    """SHA-256 over architecture and tensors. The PLN's hash has no arch name in it (files from
    before the registry keep their fingerprints); every other architecture's name is hashed first."""
    h = hashlib.sha256()
    if arch != DEFAULT_ARCH:
        h.update(b"raybb.arch\0" + arch.encode() + b"\0")
    h.update(json.dumps(config.to_dict(), sort_keys=True).encode())
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(name.encode() + b"\0" + str(t.dtype).encode() + b"\0" + str(tuple(t.shape)).encode() + b"\0")
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _state(model: LadderNetwork, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", torch.float32).to(dtype).contiguous() for k, v in model.state_dict().items()}


def save_weights(
    path: str | Path, model: LadderNetwork, meta: dict | None = None, *, dtype: torch.dtype = torch.float32
) -> str:
    """Write ``model`` to ``path`` (atomically) and return its fingerprint.

    ``dtype=torch.float16`` halves the file (for shipping); the fingerprint is that of the stored
    float16 tensors, i.e. of the model the file actually loads as. Checkpoints stay float32.
    """
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"weights are stored as one of {STORAGE_DTYPES}, not {dtype}")
    state = _state(model, dtype)
    if dtype != torch.float32:
        bad = [k for k, v in state.items() if not torch.isfinite(v).all()]
        if bad:
            raise ValueError(f"parameters {bad[:3]} overflow {dtype}; store this model as float32")
    arch = arch_of(model)
    fp = fingerprint(state, model.config, arch)
    md = {
        "raybb.format": FORMAT_VERSION,
        "raybb.config": json.dumps(model.config.to_dict(), sort_keys=True),
        "raybb.meta": json.dumps(meta or {}, sort_keys=True),
        "raybb.fingerprint": fp,
    }
    if arch != DEFAULT_ARCH:  # PLN files stay exactly as before the registry
        md["raybb.arch"] = arch
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(st_save_bytes(state, metadata=md))
    tmp.replace(path)
    return fp


def _parse(data: bytes, origin: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if len(data) < 8:
        raise WeightsError(f"{origin}: not a safetensors file (only {len(data)} bytes)")
    header_len = int.from_bytes(data[:8], "little")
    if header_len > len(data) - 8 or header_len > 100_000_000:
        raise WeightsError(f"{origin}: not a safetensors file (bad header length)")
    try:
        header = json.loads(data[8 : 8 + header_len])
        state = st_load_bytes(data)
    except (SafetensorError, ValueError, UnicodeDecodeError) as e:
        raise WeightsError(f"{origin}: corrupt safetensors file: {e}") from e
    md = header.get("__metadata__") or {}
    if not isinstance(md, dict):
        raise WeightsError(f"{origin}: bad metadata")
    return state, md


def read_metadata(path: str | Path) -> dict:
    """Architecture, meta and fingerprint of a weights file, without building the model."""
    data = _read(path)
    _, md = _parse(data, str(path))
    return _check_md(md, str(path))


def _read(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise WeightsError(f"cannot read weights file {path}: {e}") from e


def _check_config(config: LadderConfig, origin: str) -> None:
    """The PLN's config check as ``WeightsError`` (kept for callers of the pre-registry API)."""
    try:
        get_architecture(DEFAULT_ARCH).check(config)
    except ValueError as e:
        raise WeightsError(f"{origin}: {e}") from e


def _check_md(md: dict[str, str], origin: str) -> dict:
    if md.get("raybb.format") != FORMAT_VERSION:
        raise WeightsError(f"{origin}: not a raybb weights file (format {md.get('raybb.format')!r})")
    arch_name = md.get("raybb.arch", DEFAULT_ARCH)
    try:
        arch = get_architecture(arch_name)
    except KeyError as e:
        raise WeightsError(f"{origin}: {e.args[0]}") from e
    try:
        raw = json.loads(md["raybb.config"])
        meta = json.loads(md.get("raybb.meta", "{}"))
        fp = md["raybb.fingerprint"]
        if not isinstance(raw, dict):
            raise ValueError("raybb.config is not a JSON object")
    except (KeyError, ValueError, TypeError) as e:
        raise WeightsError(f"{origin}: bad raybb metadata: {e}") from e
    try:
        config = arch.config_from_dict(raw)
    except (ValueError, TypeError) as e:
        msg = str(e) if str(e).startswith("bad architecture") else f"bad raybb metadata: {e}"
        raise WeightsError(f"{origin}: {msg} (architecture {arch_name!r})") from e
    return {"config": config, "meta": meta, "fingerprint": fp, "arch": arch_name}


def load_weights(path: str | Path | bytes, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a weights file written by ``save_weights``; verifies architecture and fingerprint."""
    origin = "<bytes>" if isinstance(path, bytes | bytearray) else str(path)
    data = bytes(path) if isinstance(path, bytes | bytearray) else _read(path)
    state, md = _parse(data, origin)
    info = _check_md(md, origin)
    config = info["config"]
    arch = get_architecture(info["arch"])
    actual = fingerprint(state, config, arch.name)
    if actual != info["fingerprint"]:
        raise WeightsError(f"{origin}: fingerprint mismatch (file corrupted or edited)")
    with torch.device("meta"):  # shapes only: nothing is allocated before the file is known to fit
        expected = arch.build(config).state_dict()
    if set(expected) != set(state):
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        raise WeightsError(
            f"{origin}: tensors do not match the architecture (missing {missing[:3]}, extra {extra[:3]})"
        )
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise WeightsError(f"{origin}: tensor {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
        if v.dtype not in STORAGE_DTYPES:  # save_weights writes float32 or float16 only
            raise WeightsError(f"{origin}: tensor {k} has dtype {v.dtype}, expected torch.float32 or torch.float16")
    model = arch.build(config)
    model.load_state_dict({k: v.float() for k, v in state.items()})  # float16 → float32 is exact
    model.eval().requires_grad_(False)
    return LoadedModel(model=model.to(device), config=config, meta=info["meta"], fingerprint=actual, arch=arch.name)


def lineage(model: LoadedModel, name: str) -> dict:
    """What a fine-tuned model started from: name, fingerprint, β, steps and that model's own
    ``fine_tuned_from``, so a shipped file keeps its whole chain of fine-tunings in its meta."""
    return {
        "name": name,
        "fingerprint": model.fingerprint,
        "beta": model.meta.get("beta"),
        "steps": model.meta.get("steps"),
        "fine_tuned_from": model.meta.get("fine_tuned_from"),
    }
