"""Package a trained model as one of the weights shipped inside raybb (raybb/weights/<name>.safetensors).

Takes a weights file or a training directory (``raybb train -o DIR`` / ``train_to_directory``:
its latest ``checkpoint/model.safetensors``), stores the tensors as float16 (half the size; see
``raybb.model.weights``) and records where the model came from:

    python tools/ship_weights.py runs/pln-b0.1 --name pln-q2

Training runs started from weights (``init_weights``) record that lineage (name, β, steps,
fingerprint and that model's own ``fine_tuned_from``) in their checkpoints' meta, and it is kept.
``--from W`` sets it instead, for checkpoints written before runs recorded it. Afterwards re-run
the Kodak evaluation and ``benchmarks/write_sidecars.py`` so ``raybb models`` shows the new
model's measured numbers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from raybb.model.weights import lineage, load_weights, save_weights  # noqa: E402

WEIGHTS = REPO / "raybb" / "weights"
DTYPES = {"float16": torch.float16, "float32": torch.float32}


def _source(path: Path) -> Path:
    if path.is_dir():
        path = path / "checkpoint" / "model.safetensors"
    if not path.is_file():
        raise SystemExit(f"no weights at {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="weights file, or a training directory (uses checkpoint/)")
    ap.add_argument("--name", required=True, help="shipped name, e.g. pln-q3")
    ap.add_argument("--from", dest="init", type=Path, help="the weights the run was initialised from")
    ap.add_argument("--from-name", help="name to record for --from (default: its file stem)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="float16")
    ap.add_argument("--dest", type=Path, default=WEIGHTS)
    args = ap.parse_args(argv)
    src = _source(args.source)
    loaded = load_weights(src)
    meta = dict(loaded.meta)
    if args.init is not None:  # runs record this themselves; --from is for older checkpoints
        meta["fine_tuned_from"] = lineage(load_weights(args.init), args.from_name or args.init.stem)
    meta.setdefault("fine_tuned_from", None)
    out = args.dest / f"{args.name}.safetensors"
    fp = save_weights(out, loaded.model, meta, dtype=DTYPES[args.dtype])
    size = out.stat().st_size / 1e6
    print(f"{out}: {size:.2f} MB, fingerprint {fp[:16]}, beta {meta.get('beta')}, steps {meta.get('steps')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
