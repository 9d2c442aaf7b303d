"""Where a number was measured: CPU, cores, software versions and date, for results files."""

from __future__ import annotations

import datetime as _dt
import os
import platform

__all__ = ["machine_info"]


def machine_info() -> dict[str, str]:
    """A short description of where numbers were measured, for results files."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import torch

        torch_v = torch.__version__
        threads = str(torch.get_num_threads())
    except Exception:  # pragma: no cover
        torch_v, threads = "n/a", "n/a"
    return {
        "date": _dt.date.today().isoformat(),
        "cpu": cpu,
        "cpu_count": str(os.cpu_count()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch_v,
        "torch_threads": threads,
    }
