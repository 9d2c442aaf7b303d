"""One settings object per bucket job: what the Python API, ``raybb bucket`` and ``jobs/`` all build.

    from raybb.distributed import CompressJobConfig, compress_bucket
    compress_bucket("s3://b/photos/", "s3://b/archive/", CompressJobConfig(workers=8, gpu=True))
    compress_bucket("s3://b/photos/", "s3://b/archive/", workers=8, gpu=True)   # the same

Each setting has one name everywhere: the field name here is the keyword of
:func:`~raybb.distributed.compress_bucket`, and ``--field-name`` (underscores as dashes) is the
option of ``raybb bucket compress`` and of ``jobs/compress_bucket.py``; a test checks the three
agree. Names used before are accepted as deprecated aliases (:data:`DEPRECATED_NAMES`).

Pure Python (no Ray import), so the CLI can describe its options without starting anything. A
``model`` or ``quality`` that is given is resolved when the config is built (:func:`check_model`),
so a bad one is refused on the driver, before Ray starts or anything is written, rather than by
every actor after its retries.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from raybb.distributed.partition import DEFAULT_SHARD_BYTES, DEFAULT_SHARD_IMAGES, DEFAULT_SHARD_PIXELS
from raybb.errors import ModelError, WeightsError
from raybb.imageio import DEFAULT_MAX_PIXELS

__all__ = [
    "BucketJobConfig",
    "CompressJobConfig",
    "DecompressJobConfig",
    "DEPRECATED_NAMES",
    "JobModelError",
    "UseGpu",
    "check_model",
    "config_from",
    "parse_gpu",
]

UseGpu = bool | Literal["auto"]

#: Old keyword/option names -> the one name now used (each still works and warns).
DEPRECATED_NAMES = {"num_workers": "workers", "use_gpu": "gpu", "ray_address": "address"}

#: Fields that exist only in the Python API (dicts of fsspec options, typically credentials, come
#: from the environment on the command line).
API_ONLY = ("storage_options", "dst_storage_options")


def _opt(default: Any, help: str, negatable: bool = False, **kw: Any) -> Any:  # noqa: A002
    """A field with its help text (shared by the CLI and the job script); ``negatable``: a switch
    given as ``--name/--no-name`` on the command line (others are flags or take a value)."""
    return field(default=default, metadata={"help": help, "negatable": negatable}, **kw)


@dataclass(frozen=True)
class BucketJobConfig:
    """Settings shared by bucket compression and decompression (all optional)."""

    model: str | None = _opt(None, "Model name (`raybb models`) or .safetensors path (default: the default model).")
    sampler: str | None = _opt(None, "Coded-sampling pipeline (default: the codec's default).")
    workers: int | None = _opt(None, "Ray actors (default: one per GPU, else one per CPU of the cluster).")
    gpu: UseGpu = _opt("auto", "auto | yes | no ('yes' on autoscaling clusters whose GPU nodes start at 0).")
    cpus_per_worker: float = _opt(0.5, "Logical CPUs each CPU actor reserves (fractional: others still run).")
    worker_memory_mb: int | None = _opt(
        None, "Memory (MiB) Ray reserves per CPU actor; its tiles are sized to code --max-pixels images in it."
    )
    tile_pixels: int | None = _opt(
        None,
        "Run the transforms in tiles of at most this many pixels (default: from worker memory, or the device).",
    )
    max_pixels: int = _opt(DEFAULT_MAX_PIXELS, "Refuse images (and bitstreams declaring images) above this size.")
    shard_size: int = _opt(DEFAULT_SHARD_IMAGES, "Images per shard (the unit of work and of retry).")
    shard_bytes: int = _opt(DEFAULT_SHARD_BYTES, "Source bytes per shard.")
    shard_pixels: int = _opt(DEFAULT_SHARD_PIXELS, "Pixels per shard (estimated from object sizes).")
    max_in_flight: int | None = _opt(None, "Shards running at once (default: two per worker).")
    max_attempts: int = _opt(3, "Attempts per shard before its images get error rows.")
    resume: bool = _opt(True, "Skip images an earlier run finished (manifest row and output present).", True)
    overwrite: bool = _opt(False, "Redo outputs that exist without a manifest row (else they are checked).")
    manifest: str | None = _opt(None, "Manifest URL (default DST/_manifest.parquet).")
    allow_empty: bool = _opt(False, "Accept a source that does not exist or lists nothing (else exit 6).")
    address: str | None = _opt(None, "Ray address (default: RAY_ADDRESS, a running local cluster, or a private one).")
    flush_rows: int = _opt(1000, "Manifest rows per written file (at most).")
    flush_seconds: float = _opt(20.0, "Write a manifest file at least this often (seconds).")
    actor_start_timeout: float = _opt(900.0, "Fail if no worker becomes ready within this many seconds.")
    codec_factory: str | None = _opt(None, "'module:function' building the codec (default raybb.codec:load_codec).")
    storage_options: dict | None = _opt(None, "fsspec options for SRC and DST.", repr=False)
    dst_storage_options: dict | None = _opt(None, "fsspec options for DST (override).", repr=False)

    def __post_init__(self) -> None:
        self._check_settings()
        self._check_model()

    def _check_settings(self) -> None:
        if isinstance(self.gpu, str):  # the command-line spelling: auto | yes | no
            object.__setattr__(self, "gpu", parse_gpu(self.gpu))
        if self.gpu not in (True, False, "auto"):
            raise ValueError(f"gpu must be True, False or 'auto', not {self.gpu!r}")
        for name in ("shard_size", "shard_bytes", "shard_pixels", "max_attempts", "max_pixels", "flush_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)!r}")
        for name in ("workers", "max_in_flight", "worker_memory_mb", "tile_pixels"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1 (or unset), not {v!r}")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker must be > 0, not {self.cpus_per_worker!r}")
        if self.worker_memory_mb is not None and self.tile_pixels is None and self.gpu is not True:
            # a CPU actor's tiles are sized from its memory: refuse a budget too small now, not on Ray
            from raybb.tiling import tile_pixels_for_memory

            tile_pixels_for_memory(self.worker_memory_mb * 2**20, self.max_pixels)

    def _check_model(self) -> None:
        check_model(self.model, codec_factory=self.codec_factory, address=self.address)

    @classmethod
    def option_names(cls, *, api_only: bool = False) -> list[str]:
        """Field names in declaration order (without the API-only ones unless ``api_only``)."""
        return [f.name for f in fields(cls) if api_only or f.name not in API_ONLY]

    @classmethod
    def help_for(cls, name: str) -> str:
        return cls.__dataclass_fields__[name].metadata.get("help", "")

    @classmethod
    def negatable(cls, name: str) -> bool:
        return bool(cls.__dataclass_fields__[name].metadata.get("negatable"))

    def replace(self, **changes: Any) -> BucketJobConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class CompressJobConfig(BucketJobConfig):
    """Settings of a bucket compression job (:func:`~raybb.distributed.compress_bucket`)."""

    quality: int | float | None = _opt(None, "Quality of the model (instead of --model).")
    effort: int = _opt(0, "Encoder effort 0-3: 0 = fastest; higher refines each image first (docs/effort.md).")
    metric: str = _opt("mse", "What refinement (effort >= 1) optimises: mse or ms-ssim.")
    target_bpp: float | None = _opt(None, "Aim at this bpp per image (effort >= 1).")
    target_psnr: float | None = _opt(None, "Aim at this PSNR per image (effort >= 1).")
    verify: bool = _opt(False, "Decode each bitstream again before marking it ok.", True)

    def _check_settings(self) -> None:
        super()._check_settings()
        from raybb.codec import _check_effort, _check_targets

        _check_effort(self.effort, self.metric)
        _check_targets(self.target_bpp, self.target_psnr)
        if (self.target_bpp is not None or self.target_psnr is not None) and self.effort == 0:
            raise ValueError("target_bpp/target_psnr need effort 1 or more")
        if self.model is not None and self.quality is not None:
            raise ValueError("give model or quality, not both")

    def _check_model(self) -> None:
        check_model(self.model, self.quality, codec_factory=self.codec_factory, address=self.address)


@dataclass(frozen=True)
class DecompressJobConfig(BucketJobConfig):
    """Settings of a bucket decompression job (:func:`~raybb.distributed.decompress_bucket`).

    Each bitstream is decoded with the model its fingerprint names (``model`` first, else any
    installed model), so there is nothing to choose beyond the shared settings.
    """


class JobModelError(ModelError, ValueError):
    """A job's ``model`` or ``quality`` names no loadable model: refused when the config is built.

    A :class:`~raybb.errors.ModelError` (exit 5 in the CLI and ``jobs/compress_bucket.py``, as for
    ``raybb compress``), and a ValueError like every other bad setting for API callers; refused before
    Ray starts."""


def check_model(
    model: str | os.PathLike | None,
    quality: int | float | None = None,
    *,
    codec_factory: str | None = None,
    address: str | None = None,
) -> None:
    """Resolve ``model`` or ``quality`` here as the actors' codec will (raybb.registry), or raise
    :class:`JobModelError`.

    A registry name or a quality must be installed; a local weights file must exist and its
    safetensors header must be raybb weights (only the header is read, not the tensors). Not
    checked: neither given (the default model: resolved by the actors), a URL (``s3://...``: read
    by the actors, not here), a custom ``codec_factory`` (it gives ``model`` its own meaning), and a
    Ray client address (``ray://``: the cluster's files and registry are not this machine's).
    """
    if model is None and quality is None:
        return
    ray_address = address if address is not None else os.environ.get("RAY_ADDRESS", "")
    if codec_factory is not None or ray_address.startswith("ray://"):
        return
    text = os.fspath(model) if isinstance(model, os.PathLike) else str(model)
    try:
        if quality is not None:
            _resolve_quality(quality)
        elif "://" not in text:
            path = Path(text).expanduser()
            if path.is_file():
                _check_weights_header(path)
            else:
                from raybb.registry import resolve_model

                resolve_model(model)  # a name, qN, or a path that is not there (ModelError)
    except JobModelError:
        raise
    except ModelError as e:
        raise JobModelError(str(e)) from e


def _resolve_quality(quality: int | float) -> None:
    """A quality the default model takes (a PLN preset, or any value in a variable-rate model's range)."""
    from raybb.registry import resolve_quality

    resolve_quality(quality)


def _check_weights_header(path: Path) -> None:
    """The safetensors header of ``path`` is raybb weights of a known architecture (WeightsError)."""
    from raybb.model.weights import _check_md

    try:
        with path.open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 2 <= n <= 100_000_000:
                raise WeightsError(f"{path}: not a safetensors file (bad header length)")
            header = json.loads(f.read(n))
    except OSError as e:
        raise WeightsError(f"cannot read weights file {path}: {e}") from e
    except (ValueError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path}: not a safetensors file ({e})") from e
    md = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(md, dict):
        raise WeightsError(f"{path}: not a raybb weights file (no metadata)")
    _check_md(md, str(path))


def parse_gpu(value: str | bool) -> UseGpu:
    """``auto``/``yes``/``no`` (the command-line spelling) -> ``"auto"``/True/False."""
    if isinstance(value, bool):
        return value
    try:
        return {"auto": "auto", "yes": True, "no": False, "true": True, "false": False}[value.lower()]
    except KeyError:
        raise ValueError(f"gpu must be auto, yes or no, not {value!r}") from None


def config_from(cls: type[BucketJobConfig], config: BucketJobConfig | None, settings: dict[str, Any]) -> Any:
    """``cls`` from an optional base ``config`` and keyword ``settings`` (which win).

    Deprecated names are renamed with a :class:`DeprecationWarning`; an unknown name is a
    TypeError, as for any keyword argument.
    """
    given = dict(settings)
    for old, new in DEPRECATED_NAMES.items():
        if old in given:
            if new in given:
                raise TypeError(f"got both {old}= and {new}=")
            warnings.warn(f"{old}= is deprecated, use {new}=", DeprecationWarning, stacklevel=3)
            given[new] = given.pop(old)
    unknown = sorted(set(given) - set(cls.__dataclass_fields__))
    if unknown:
        raise TypeError(f"unknown {cls.__name__} setting(s): {', '.join(unknown)}")
    if config is None:
        return cls(**given)
    if not isinstance(config, cls):
        raise TypeError(f"config must be a {cls.__name__}, not {type(config).__name__}")
    return dataclasses.replace(config, **given) if given else config
