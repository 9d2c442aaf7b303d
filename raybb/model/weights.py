"""Model weights on disk: safetensors + metadata + a fingerprint that bitstreams carry.

A weights file is a plain ``.safetensors`` file (no pickle: safe to open from anyone) whose
header metadata holds:

* ``raybb.format``      "1"
* ``raybb.config``      LadderConfig as JSON (the architecture)
* ``raybb.meta``        free-form JSON (β, steps, dataset fingerprint, Kodak metrics, ...)
* ``raybb.fingerprint`` hex SHA-256 over the architecture JSON and every tensor (name, dtype,
                        shape, bytes), sorted by name.

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
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load_bytes
from safetensors.torch import save as st_save_bytes

from raybb.errors import WeightsError
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
]

FORMAT_VERSION = "1"
FINGERPRINT_BYTES = 8  # the part of the fingerprint written into bitstreams
#: dtypes a weights file may store its tensors in (the model always runs in float32)
STORAGE_DTYPES = (torch.float32, torch.float16)


@dataclass
class LoadedModel:
    model: LadderNetwork
    config: LadderConfig
    meta: dict = field(default_factory=dict)
    fingerprint: str = ""  # full hex sha256

    @property
    def short_fingerprint(self) -> bytes:
        return bytes.fromhex(self.fingerprint)[:FINGERPRINT_BYTES]


def fingerprint(state: dict[str, torch.Tensor], config: LadderConfig) -> str:
    h = hashlib.sha256()
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
    fp = fingerprint(state, model.config)
    md = {
        "raybb.format": FORMAT_VERSION,
        "raybb.config": json.dumps(model.config.to_dict(), sort_keys=True),
        "raybb.meta": json.dumps(meta or {}, sort_keys=True),
        "raybb.fingerprint": fp,
    }
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


MAX_CHANNELS = 4096  # sanity bound on channel counts read from a file (the seed used 196)


def _check_config(config: LadderConfig, origin: str) -> None:
    """Reject field types/values the network cannot be built from: the fingerprint is only a hash
    (anyone can recompute it), so a file's config is untrusted input and must fail as WeightsError,
    not as a TypeError deep inside torch or a huge allocation."""
    for name in ("N", "M", "F", "G"):
        v = getattr(config, name)
        if type(v) is not int or not 1 <= v <= MAX_CHANNELS:
            raise WeightsError(f"{origin}: bad architecture: {name}={v!r} (not an int in 1..{MAX_CHANNELS})")
    if type(config.learn_scale) is not bool:
        raise WeightsError(f"{origin}: bad architecture: learn_scale={config.learn_scale!r}")
    g = config.gamma_floor
    if type(g) not in (int, float) or not (math.isfinite(g) and g > 0):
        raise WeightsError(f"{origin}: bad architecture: gamma_floor={g!r} (expected a positive number)")


def _check_md(md: dict[str, str], origin: str) -> dict:
    if md.get("raybb.format") != FORMAT_VERSION:
        raise WeightsError(f"{origin}: not a raybb weights file (format {md.get('raybb.format')!r})")
    try:
        config = LadderConfig.from_dict(json.loads(md["raybb.config"]))
        meta = json.loads(md.get("raybb.meta", "{}"))
        fp = md["raybb.fingerprint"]
    except (KeyError, ValueError, TypeError) as e:
        raise WeightsError(f"{origin}: bad raybb metadata: {e}") from e
    _check_config(config, origin)
    return {"config": config, "meta": meta, "fingerprint": fp}


def load_weights(path: str | Path | bytes, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a weights file written by ``save_weights``; verifies architecture and fingerprint."""
    origin = "<bytes>" if isinstance(path, bytes | bytearray) else str(path)
    data = bytes(path) if isinstance(path, bytes | bytearray) else _read(path)
    state, md = _parse(data, origin)
    info = _check_md(md, origin)
    config: LadderConfig = info["config"]
    actual = fingerprint(state, config)
    if actual != info["fingerprint"]:
        raise WeightsError(f"{origin}: fingerprint mismatch (file corrupted or edited)")
    with torch.device("meta"):  # shapes only: nothing is allocated before the file is known to fit
        expected = LadderNetwork(config).state_dict()
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
    model = LadderNetwork(config)
    model.load_state_dict({k: v.float() for k, v in state.items()})  # float16 → float32 is exact
    model.eval().requires_grad_(False)
    return LoadedModel(model=model.to(device), config=config, meta=info["meta"], fingerprint=actual)


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
