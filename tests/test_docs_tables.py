"""The README's results block is generated from benchmarks/results/ (tools/make_docs_tables.py):
it must match what the script produces from the committed results files, so the two cannot drift."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("make_docs_tables", REPO / "tools" / "make_docs_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_results_block_matches_the_results_files():
    mdt = _script()
    _, body, _ = mdt._split((REPO / "README.md").read_text())
    assert body == "\n" + mdt.render() + "\n", "run: python tools/make_docs_tables.py"
    assert mdt.main(["--check"]) == 0


def test_block_is_built_from_the_files():
    mdt = _script()
    text = mdt.render()
    models = sorted(p.stem for p in (REPO / "raybb" / "weights").glob("pln-q*.safetensors"))
    for m in models:
        assert f"| {m}" in text
    default = (REPO / "raybb" / "weights" / "DEFAULT").read_text().strip()
    assert f"| {default} (default) |" in text
    assert "JPEG" in text and "measured 20" in text


def test_readme_links_and_plot_exist():
    readme = (REPO / "README.md").read_text()
    for rel in (
        "benchmarks/results/kodak_rd_psnr.png",
        "docs/results.md",
        "docs/coding.md",
        "docs/training.md",
        "docs/operations.md",
        "docs/development.md",
        "tests/data/photos/car.png",
    ):
        assert rel in readme and (REPO / rel).is_file(), rel
