"""Weights files: bit-exact safetensors round trip, stable fingerprint, and rejection of anything
wrong or corrupted with ``WeightsError`` -- without ever unpickling.

Every corruption here must raise ``WeightsError`` (not a bare ValueError/KeyError/SafetensorError),
because the CLI maps error classes to exit codes and messages.
"""

from __future__ import annotations

import ast
import io
import json
import pickle
import random
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save
from safetensors.torch import save_file

from raybb.errors import RaybbError, WeightsError
from raybb.model.ladder import LadderConfig, LadderNetwork
from raybb.model.weights import fingerprint, load_weights, read_metadata, save_weights

RAYBB_SRC = Path(__file__).resolve().parents[2] / "raybb"


@pytest.fixture
def saved(tmp_path: Path, tiny_model: LadderNetwork) -> tuple[Path, LadderNetwork, str]:
    # make every tensor non-trivial (GDN/gamma inits are structured) so byte flips matter anywhere
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.add_(torch.randn_like(p) * 1e-3)
    path = tmp_path / "tiny.safetensors"
    fp = save_weights(path, tiny_model, {"beta": 4.0, "steps": 7, "note": "test"})
    return path, tiny_model, fp


def _header_len(data: bytes) -> int:
    return int.from_bytes(data[:8], "little")


def test_round_trip_bit_exact(saved) -> None:
    path, model, fp = saved
    loaded = load_weights(path)
    assert loaded.fingerprint == fp
    assert len(fp) == 64 and re.fullmatch(r"[0-9a-f]{64}", fp)
    assert loaded.short_fingerprint == bytes.fromhex(fp)[:8]
    assert loaded.config == model.config
    assert loaded.meta == {"beta": 4.0, "steps": 7, "note": "test"}
    ref, got = model.state_dict(), loaded.model.state_dict()
    assert set(ref) == set(got)
    for k in ref:
        assert got[k].dtype == ref[k].dtype
        assert torch.equal(got[k], ref[k]), k
    # the loaded model is ready for inference and computes exactly what the original does
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    x = torch.rand(1, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x, sample=False).x_hat, loaded.model(x, sample=False).x_hat)
    # loading from bytes is the same as loading from the path
    assert load_weights(path.read_bytes()).fingerprint == fp
    # fingerprint recomputed from the loaded state equals the stored one
    assert fingerprint(loaded.model.state_dict(), loaded.config) == fp


def test_save_is_deterministic_and_fingerprint_tracks_content(saved, tmp_path: Path) -> None:
    path, model, fp = saved
    again = tmp_path / "again.safetensors"
    assert save_weights(again, model, {"beta": 4.0, "steps": 7, "note": "test"}) == fp
    a, b = again.read_bytes(), path.read_bytes()
    # same header content (safetensors writes the metadata map in hash order, so compare parsed)
    # and byte-identical tensor data
    assert json.loads(a[8 : 8 + _header_len(a)]) == json.loads(b[8 : 8 + _header_len(b)])
    assert a[8 + _header_len(a) :] == b[8 + _header_len(b) :]
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temp file
    # meta is not part of the fingerprint (it describes, it does not change, the decoder)
    assert save_weights(tmp_path / "m.safetensors", model, {"other": 1}) == fp
    # one changed weight, or a changed architecture field, changes the fingerprint
    with torch.no_grad():
        model.g_s[0].conv.conv.bias[0] += 1e-6
    assert save_weights(tmp_path / "b.safetensors", model) != fp
    state = {k: v.clone() for k, v in model.state_dict().items()}
    other_cfg = LadderConfig(**{**model.config.to_dict(), "gamma_floor": 0.5 / 255})
    assert fingerprint(state, other_cfg) != fingerprint(state, model.config)


def test_read_metadata_without_building_model(saved) -> None:
    path, model, fp = saved
    md = read_metadata(path)
    assert md["config"] == model.config
    assert md["fingerprint"] == fp
    assert md["meta"]["beta"] == 4.0


def test_flipped_byte_in_tensor_data_is_fingerprint_mismatch(saved, tmp_path: Path) -> None:
    path, _, _ = saved
    data = bytearray(path.read_bytes())
    start = 8 + _header_len(data)
    rng = random.Random(0)
    for pos in [start, len(data) - 1] + [rng.randrange(start, len(data)) for _ in range(8)]:
        bad = bytearray(data)
        bad[pos] ^= 0x01
        p = tmp_path / "flipped.safetensors"
        p.write_bytes(bytes(bad))
        with pytest.raises(WeightsError, match="fingerprint mismatch"):
            load_weights(p)


@pytest.mark.parametrize("keep", [0, 5, 8, 20, "mid_header", "end_header", "mid_data", -1])
def test_truncated_file_rejected(saved, tmp_path: Path, keep) -> None:
    path, _, _ = saved
    data = path.read_bytes()
    hl = 8 + _header_len(data)
    n = {"mid_header": hl // 2, "end_header": hl, "mid_data": (hl + len(data)) // 2, -1: len(data) - 1}.get(keep, keep)
    p = tmp_path / "trunc.safetensors"
    p.write_bytes(data[:n])
    with pytest.raises(WeightsError):
        load_weights(p)
    with pytest.raises(WeightsError):
        load_weights(data[:n])


def test_random_and_foreign_files_rejected(tmp_path: Path) -> None:
    rng = random.Random(1)
    cases = {
        "random": bytes(rng.randrange(256) for _ in range(4096)),
        "png_like": b"\x89PNG\r\n\x1a\n" + bytes(200),
        "small_header_garbage": (16).to_bytes(8, "little") + b"\xff" * 16 + b"\x00" * 64,
        "json_list_header": (3).to_bytes(8, "little") + b"[1]",
        "text": b"hello, I am not a model\n" * 10,
        "empty": b"",
    }
    for name, blob in cases.items():
        p = tmp_path / f"{name}.safetensors"
        p.write_bytes(blob)
        with pytest.raises(WeightsError):
            load_weights(p)
    with pytest.raises(WeightsError):
        load_weights(tmp_path / "does-not-exist.safetensors")
    with pytest.raises(WeightsError):
        load_weights(tmp_path)  # a directory


def test_plain_safetensors_without_raybb_metadata_rejected(tmp_path: Path, tiny_model: LadderNetwork) -> None:
    p = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(p))
    with pytest.raises(WeightsError, match="not a raybb weights file"):
        load_weights(p)
    with pytest.raises(WeightsError):
        read_metadata(p)


def _write(path: Path, state: dict, md: dict) -> Path:
    path.write_bytes(st_save({k: v.contiguous() for k, v in state.items()}, metadata=md))
    return path


def test_tensors_not_matching_config_rejected(tmp_path: Path, tiny_model: LadderNetwork) -> None:
    """A self-consistent file (correct fingerprint) whose tensors belong to another architecture."""
    small = LadderNetwork(LadderConfig(N=8, M=8, F=8, G=2))
    state = small.state_dict()
    claimed = tiny_model.config  # N=M=F=16: shapes differ
    md = {
        "raybb.format": "1",
        "raybb.config": json.dumps(claimed.to_dict(), sort_keys=True),
        "raybb.meta": "{}",
        "raybb.fingerprint": fingerprint(state, claimed),
    }
    with pytest.raises(WeightsError, match="shape"):
        load_weights(_write(tmp_path / "shapes.safetensors", state, md))
    # missing and extra tensors
    full = tiny_model.state_dict()
    for variant in (
        {k: v for k, v in full.items() if not k.startswith("h_s")},
        {**full, "extra.weight": torch.ones(2)},
    ):
        md2 = {**md, "raybb.fingerprint": fingerprint(variant, claimed)}
        with pytest.raises(WeightsError, match="do not match the architecture"):
            load_weights(_write(tmp_path / "names.safetensors", variant, md2))


class _Cfg:
    """Stands in for LadderConfig in ``fingerprint`` so a forged file can carry any config dict."""

    def __init__(self, d: dict):
        self.d = d

    def to_dict(self) -> dict:
        return self.d


def _forged(state: dict, cfg: dict) -> bytes:
    """A self-consistent raybb file (the fingerprint is only a hash: anyone can recompute it)."""
    md = {
        "raybb.format": "1",
        "raybb.config": json.dumps(cfg, sort_keys=True),
        "raybb.meta": "{}",
        "raybb.fingerprint": fingerprint(state, _Cfg(cfg)),
    }
    return st_save({k: v.contiguous() for k, v in state.items()}, metadata=md)


@pytest.mark.parametrize(
    "over",
    [
        {"N": "16"},
        {"N": 16.0},
        {"N": True},
        {"N": None},
        {"M": 0},
        {"G": -3},
        {"F": 10**9},  # would ask for gigabytes if the model were built before checking
        {"learn_scale": "no"},
        {"gamma_floor": "x"},
        {"gamma_floor": 0.0},
        {"gamma_floor": -1.0},
    ],
)
def test_forged_config_values_rejected_as_weights_error(tiny_model: LadderNetwork, over: dict) -> None:
    cfg = {**tiny_model.config.to_dict(), **over}
    with pytest.raises(WeightsError, match="bad architecture"):
        load_weights(_forged(tiny_model.state_dict(), cfg))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.int32, torch.bool, torch.complex64])
def test_other_tensor_dtypes_rejected(tiny_model: LadderNetwork, dtype: torch.dtype) -> None:
    """save_weights writes float32 or float16 only; anything else (e.g. complex silently losing its
    imaginary part in load_state_dict) is a foreign file."""
    state = {k: v.to(dtype) for k, v in tiny_model.state_dict().items()}
    with pytest.raises(WeightsError, match="dtype"):
        load_weights(_forged(state, tiny_model.config.to_dict()))


def test_float16_storage_halves_the_file_and_loads_as_float32(saved, tmp_path: Path) -> None:
    """Shipped weights are stored as float16: the file is half the size, the model is rebuilt in
    float32 from exactly the stored values, and the fingerprint is that of the stored tensors."""
    path, model, fp32_fp = saved
    half = tmp_path / "half.safetensors"
    fp = save_weights(half, model, {"note": "half"}, dtype=torch.float16)
    assert fp != fp32_fp  # a different model (rounded weights), so bitstreams must not mix them
    assert half.stat().st_size < 0.6 * path.stat().st_size
    loaded = load_weights(half)
    assert loaded.fingerprint == fp and loaded.meta == {"note": "half"}
    stored = {k: v.half() for k, v in model.state_dict().items()}
    assert fingerprint(stored, model.config) == fp
    for k, v in loaded.model.state_dict().items():
        assert v.dtype == torch.float32
        assert torch.equal(v, stored[k].float()), k
    assert load_weights(half.read_bytes()).fingerprint == fp  # same again from bytes
    # saving the loaded (float32, rounded) model as float16 again is lossless: same fingerprint
    assert save_weights(tmp_path / "again.safetensors", loaded.model, dtype=torch.float16) == fp
    x = torch.rand(1, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        a, b = model(x, sample=False).x_hat, loaded.model(x, sample=False).x_hat
    assert not torch.equal(a, b) and (a - b).abs().max() < 1e-2


def test_save_rejects_other_dtypes_and_float16_overflow(tiny_model: LadderNetwork, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="stored as one of"):
        save_weights(tmp_path / "b.safetensors", tiny_model, dtype=torch.bfloat16)
    with torch.no_grad():
        tiny_model.g_a[0].conv.bias[0] = 1e6  # beyond float16's range (65504)
    with pytest.raises(ValueError, match="overflow"):
        save_weights(tmp_path / "o.safetensors", tiny_model, dtype=torch.float16)
    assert not list(tmp_path.iterdir())  # nothing written


def test_forged_but_valid_file_loads(tiny_model: LadderNetwork) -> None:
    """The checks above reject bad content, not a file made by other means than save_weights."""
    loaded = load_weights(_forged(tiny_model.state_dict(), tiny_model.config.to_dict()))
    assert loaded.config == tiny_model.config


def test_bad_metadata_rejected(saved, tmp_path: Path) -> None:
    path, model, fp = saved
    state = model.state_dict()
    good = {
        "raybb.format": "1",
        "raybb.config": json.dumps(model.config.to_dict(), sort_keys=True),
        "raybb.meta": "{}",
        "raybb.fingerprint": fp,
    }
    bad_variants = [
        {**good, "raybb.format": "2"},  # unknown format version
        {**good, "raybb.config": "{not json"},
        {**good, "raybb.config": json.dumps({**model.config.to_dict(), "bogus": 1})},  # unknown field
        {k: v for k, v in good.items() if k != "raybb.fingerprint"},
        {**good, "raybb.fingerprint": "0" * 64},  # edited fingerprint
        {**good, "raybb.meta": "[oops"},
    ]
    for i, md in enumerate(bad_variants):
        with pytest.raises(WeightsError):
            load_weights(_write(tmp_path / f"bad{i}.safetensors", state, md))
    assert load_weights(_write(tmp_path / "good.safetensors", state, good)).fingerprint == fp


def test_any_single_byte_flip_is_rejected_or_harmless(saved) -> None:
    """Fuzz: flipping one byte anywhere either raises WeightsError or (inside the free-form meta
    text / header padding) loads a model with exactly the original tensors and fingerprint."""
    path, model, fp = saved
    data = path.read_bytes()
    hl = 8 + _header_len(data)
    rng = random.Random(2)
    positions = sorted(set(range(8)) | {rng.randrange(8, hl) for _ in range(600)})
    positions += [rng.randrange(hl, len(data)) for _ in range(40)]
    ref = model.state_dict()
    for pos in positions:
        bad = bytearray(data)
        bad[pos] ^= 1 << rng.randrange(8)
        try:
            loaded = load_weights(bytes(bad))
        except WeightsError:
            continue
        except Exception as e:  # pragma: no cover - the failure we are looking for
            pytest.fail(f"byte {pos}: {type(e).__name__} instead of WeightsError: {e}")
        assert loaded.fingerprint == fp, pos
        assert all(torch.equal(loaded.model.state_dict()[k], ref[k]) for k in ref), pos


class _Boom:
    """Unpickling this object would create a marker file (what a malicious checkpoint could do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickles_are_rejected_and_never_unpickled(tmp_path: Path, tiny_model: LadderNetwork) -> None:
    marker = tmp_path / "pwned"
    payloads = {"raw.pkl": pickle.dumps({"state": _Boom(marker)})}
    buf = io.BytesIO()
    torch.save({"model": tiny_model.state_dict(), "x": _Boom(marker)}, buf)
    payloads["torch_save.pt"] = buf.getvalue()
    assert not marker.exists()
    for name, blob in payloads.items():
        p = tmp_path / name
        p.write_bytes(blob)
        with pytest.raises(WeightsError):
            load_weights(p)
        with pytest.raises(WeightsError):
            read_metadata(p)
    assert not marker.exists()


def test_weights_error_is_a_raybb_error() -> None:
    assert issubclass(WeightsError, RaybbError)


# -- no pickle-based loading anywhere in the package --------------------------------------------

_PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _pickle_uses(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[-1] in _PICKLE_MODULES]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if mod.split(".")[-1] in _PICKLE_MODULES or any(a.name in _PICKLE_MODULES for a in node.names):
                found.append(f"from {mod} import ...")
            if mod == "torch" and any(a.name == "load" for a in node.names):
                found.append("from torch import load")
        elif isinstance(node, ast.Attribute):
            # torch.load(...), torch.serialization.load, x.pickle..., np.load(allow_pickle=True) below
            if node.attr == "load" and isinstance(node.value, ast.Name) and node.value.id == "torch":
                found.append("torch.load")
            if node.attr in ("load", "_load") and ast.unparse(node.value) == "torch.serialization":
                found.append("torch.serialization.load")
            if isinstance(node.value, ast.Name) and node.value.id in _PICKLE_MODULES:
                found.append(f"{node.value.id}.{node.attr}")
        elif isinstance(node, ast.keyword) and node.arg == "allow_pickle":
            if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                found.append("allow_pickle=")
    return found


def test_pickle_detector_detects() -> None:
    src = "import pickle\nimport torch\nfrom joblib import load\nx = torch.load('f')\nnp.load(p, allow_pickle=True)\n"
    assert len(_pickle_uses(ast.parse(src))) == 4
    assert _pickle_uses(ast.parse('"""no pickle, no torch.load here"""\n# torch.load\n')) == []


def test_no_torch_load_or_pickle_in_package_sources() -> None:
    files = sorted(RAYBB_SRC.rglob("*.py"))
    assert len(files) > 10
    offenders = {}
    for f in files:
        uses = _pickle_uses(ast.parse(f.read_text(encoding="utf-8"), filename=str(f)))
        if uses:
            offenders[str(f.relative_to(RAYBB_SRC.parent))] = uses
    assert offenders == {}
