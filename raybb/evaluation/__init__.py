"""Rate-distortion evaluation (``raybb eval``), split by concern:

* ``bd``       Bjøntegaard deltas (``bd_rate``, ``bd_psnr``);
* ``anchors``  published Kodak points (``KODAK_ANCHORS``);
* ``tables``   averages, BD-rate tables, markdown;
* ``plots``    RD, level-2 share and coding-time plots;
* ``machine``  ``machine_info`` for results files;
* ``runner``   ``evaluate_folder``, which measures a folder and writes all of the above.

Every public name is importable from ``raybb.evaluation`` itself.
"""

from __future__ import annotations

from raybb.evaluation.anchors import KODAK_ANCHORS
from raybb.evaluation.bd import bd_psnr, bd_rate
from raybb.evaluation.machine import machine_info
from raybb.evaluation.plots import plot_coding_time, plot_level2_share, plot_rd
from raybb.evaluation.runner import PER_IMAGE_COLUMNS, EvalReport, evaluate_folder, list_images
from raybb.evaluation.tables import average_table, bd_table, markdown_table

__all__ = [
    "KODAK_ANCHORS",
    "EvalReport",
    "PER_IMAGE_COLUMNS",
    "bd_rate",
    "bd_psnr",
    "evaluate_folder",
    "average_table",
    "bd_table",
    "list_images",
    "machine_info",
    "markdown_table",
    "plot_rd",
    "plot_level2_share",
    "plot_coding_time",
]
