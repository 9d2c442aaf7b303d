"""tools/ship_weights.py: a training checkpoint becomes a float16 shipped file that keeps its lineage."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from raybb.model.ladder import LadderNetwork
from raybb.model.weights import load_weights, read_metadata, save_weights

TOOL = Path(__file__).resolve().parents[2] / "tools" / "ship_weights.py"


def _tool():
    spec = importlib.util.spec_from_file_location("ship_weights", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ship_checkpoint_as_float16_with_lineage(tiny_model: LadderNetwork, tmp_path: Path) -> None:
    parent = tmp_path / "parent.safetensors"
    parent_fp = save_weights(parent, tiny_model, {"beta": 0.05, "steps": 100, "fine_tuned_from": None})
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.add_(torch.randn_like(p) * 1e-3)
    run = tmp_path / "run" / "checkpoint"
    save_weights(run / "model.safetensors", tiny_model, {"beta": 0.12, "steps": 40, "variant": "pln"})
    dest = tmp_path / "shipped"
    assert _tool().main([str(tmp_path / "run"), "--name", "pln-q9", "--from", str(parent),
                         "--from-name", "pln-q3", "--dest", str(dest)]) == 0  # fmt: skip
    out = dest / "pln-q9.safetensors"
    assert out.stat().st_size < 0.6 * (run / "model.safetensors").stat().st_size  # float16
    meta = read_metadata(out)["meta"]
    assert meta["beta"] == 0.12 and meta["steps"] == 40 and meta["variant"] == "pln"
    assert meta["fine_tuned_from"] == {
        "name": "pln-q3", "fingerprint": parent_fp, "beta": 0.05, "steps": 100, "fine_tuned_from": None
    }  # fmt: skip
    shipped = load_weights(out).model.state_dict()
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(shipped[k], v.half().float()), k


def test_ship_keeps_recorded_lineage_without_from(tiny_model: LadderNetwork, tmp_path: Path) -> None:
    chain = {"name": "pln-q2", "fingerprint": "ab" * 32, "beta": 0.05, "steps": 9, "fine_tuned_from": None}
    src = tmp_path / "w.safetensors"
    save_weights(src, tiny_model, {"beta": 0.1, "steps": 3, "fine_tuned_from": chain})
    assert _tool().main([str(src), "--name", "pln-q2", "--dest", str(tmp_path / "out")]) == 0
    assert read_metadata(tmp_path / "out" / "pln-q2.safetensors")["meta"]["fine_tuned_from"] == chain
