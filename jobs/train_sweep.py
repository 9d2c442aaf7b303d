"""β-sweep on a Ray cluster: one raybb model per (β, variant), resumable, optionally registered.

    ray submit cluster.yaml jobs/train_sweep.py -- --beta 0.4 0.1 0.05 0.015 0.0025 --variant pln \
        --data s3://my-bucket/photos --val-data s3://my-bucket/val --storage s3://my-bucket/sweeps \
        --workers 2 --gpu --steps 200000 --register-dir ~/raybb-models

Submitting the same command again (same ``--name`` and ``--storage``) resumes an interrupted sweep.
Without ``--address`` this connects to the running cluster (``$RAY_ADDRESS`` or "auto").
All options: ``python jobs/train_sweep.py --help`` (the same as ``raybb sweep``).
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    from raybb.distributed.train import sweep_main

    if "--address" not in argv and not any(a.startswith("--address=") for a in argv) and "-h" not in argv:
        argv = ["--address", os.environ.get("RAY_ADDRESS", "auto"), *argv]
    return sweep_main(argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
