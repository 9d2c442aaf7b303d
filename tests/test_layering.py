"""The codec core must not pull in the system around it (architecture.md, dependency direction)."""

import subprocess
import sys

FORBIDDEN_FOR_CORE = ["ray", "fsspec", "s3fs", "pyarrow", "typer", "rich", "pandas", "matplotlib"]


def _loaded_after(import_stmt: str, forbidden: list[str]) -> list[str]:
    code = f"import sys; {import_stmt}; print(','.join(m for m in {forbidden!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_codec_core_is_independent():
    stmt = "import raybb.codec, raybb.coding, raybb.model.ladder, raybb.model.weights, raybb.bitstream, raybb.levels"
    assert _loaded_after(stmt, FORBIDDEN_FOR_CORE) == []


def test_bitstream_is_stdlib_only():
    assert _loaded_after("import raybb.bitstream", ["torch", "numpy", *FORBIDDEN_FOR_CORE]) == []


def test_storage_does_not_import_the_model():
    assert _loaded_after("import raybb.storage", ["torch", "raybb.model", "raybb.coding", "ray"]) == []


def test_plain_import_is_cheap():
    assert _loaded_after("import raybb", ["torch", "ray"]) == []
