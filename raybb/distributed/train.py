"""Data-parallel training on Ray Train, β-sweeps on Ray Tune, and their registration.

The per-worker function wraps the *same* ``raybb.train.loop.TrainingLoop`` that ``raybb train``
runs; Ray Train only adds the process group, the data shard and the checkpoint storage::

    run_sweep(betas, variants)                       (driver; Ray Tune Tuner, resumable)
      └── one Tune trial per (β, variant): _sweep_trial        (0.01 CPU: it only waits)
            └── fit_trainer(...) -> TorchTrainer.fit()          (Ray Train V2 controller)
                  └── train_worker(config) × num_workers        (DDP: gloo on CPU, NCCL on GPU)
                        TrainingLoop(shard=(rank, world), wrap_model=prepare_model)
                        ray.train.report(metrics, checkpoint=...) every checkpoint_every steps
            └── export final weights (a normal raybb weights file) -> <sweep>/models/
      └── summary table (CSV + Markdown) -> <sweep>/summary.{csv,md}; optional register_model

Ray 2.60 runs Train V2 by default. Facts this module relies on (read in ray/train/v2):

* A ``TorchTrainer`` started again with the same ``RunConfig(name, storage_path)`` restores its
  checkpoint manager from storage, and ``ray.train.get_checkpoint()`` then returns the latest
  checkpoint: a re-run continues from the last reported step, not from step 0.
* ``TorchConfig`` picks NCCL when the workers have GPUs and gloo otherwise (we do not override).
* Workers start in a per-run working directory, so local paths are made absolute on the driver.
* A Trainer cannot be handed to a ``Tuner`` in 2.60: the Tune trainable is a function that builds
  and fits the TorchTrainer; ``ray.tune.integration.ray_train.TuneReportCallback`` forwards the
  workers' intermediate metrics to Tune. Tune does not see the Train workers' resources, so
  concurrency is bounded with ``TuneConfig(max_concurrent_trials=...)`` (by default computed from
  the cluster's CPUs/GPUs).
* An interrupted sweep is continued by ``Tuner.restore`` (finished trials are kept; unfinished and
  errored ones are re-run, and each of those resumes from its Train run's latest checkpoint).

Storage can be a local directory or any fsspec/pyarrow URL (``s3://bucket/prefix``);
``storage_options`` (s3fs keyword arguments, e.g. an ``endpoint_url``) are used both for
checkpoints (through a pyarrow ``PyFileSystem`` over s3fs) and for reading training images. Prefer
credentials from the environment or an instance profile: ``storage_options`` travel to the
workers inside the trainer configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import sys
import tempfile
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pyarrow.fs
import ray
import ray.train
import ray.train.torch
from ray import tune
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from raybb.model.ladder import VARIANTS as MODEL_VARIANTS
from raybb.model.weights import load_weights, save_weights
from raybb.train.loop import (
    DEFAULT_VARIANT,
    DEPRECATED_TRAIN_OPTIONS,
    MODEL_OPTIONS,
    PRECISIONS,
    TrainConfig,
    TrainingLoop,
    evaluate_images,
    option_flag,
    parse_channels,
)

__all__ = [
    "VARIANTS",
    "train_worker",
    "fit_trainer",
    "run_sweep",
    "SweepResult",
    "evaluate_images",
    "trial_run_name",
    "sweep_main",
]

log = logging.getLogger(__name__)

#: Model variants a sweep can train (name -> LadderConfig overrides; defined with the model).
VARIANTS = MODEL_VARIANTS
LN2 = math.log(2.0)

SUMMARY_COLUMNS = [
    "variant", "beta", "status", "steps", "resumed_from_step", "val_bpp", "val_bpp_level2",
    "val_psnr_sample", "val_psnr_mean", "val_ms_ssim_sample", "val_ms_ssim_mean", "val_images",
    "registered_as", "fingerprint", "weights", "error",
]  # fmt: skip


# -- paths and storage ------------------------------------------------------------------------
def _is_url(p: str) -> bool:
    return "://" in p


def _absolute(p: str) -> str:
    """Local paths made absolute (Ray workers run in their own working directory); URLs as is."""
    return p if _is_url(p) else os.path.abspath(os.path.expanduser(p))


@dataclass
class _Store:
    """One storage location seen three ways: URL, fsspec filesystem, and what Ray wants."""

    url: str
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.url = _absolute(self.url).rstrip("/")
        self.fs, self.path = fsspec.core.url_to_fs(self.url, **self.options)

    @property
    def ray_path(self) -> str:
        """``storage_path`` for Ray: the URL itself, or the bare path when we pass a filesystem."""
        return self.path if self.options else self.url

    @property
    def ray_filesystem(self) -> pyarrow.fs.FileSystem | None:
        """A pyarrow filesystem over our fsspec one when options (endpoint, keys) are needed."""
        if not self.options:
            return None
        return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(self.fs))

    def child(self, *parts: str) -> _Store:
        return _Store("/".join([self.url, *parts]), self.options)

    def write_bytes(self, rel: str, data: bytes) -> str:
        target = f"{self.path}/{rel}"
        self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        with self.fs.open(target, "wb") as f:
            f.write(data)
        return f"{self.url}/{rel}"

    def read_bytes(self, rel: str) -> bytes | None:
        target = f"{self.path}/{rel}"
        if not self.fs.exists(target):
            return None
        with self.fs.open(target, "rb") as f:
            return f.read()


def trial_run_name(variant: str, beta: float) -> str:
    """The Train run name of one sweep trial (stable across restarts: that is how it resumes)."""
    return f"{variant}-beta{beta:g}"


# -- Ray Train worker -------------------------------------------------------------------------
def train_worker(config: dict) -> None:
    """Ray Train per-worker function: one data-parallel replica of ``TrainingLoop``.

    ``config``: ``train`` (TrainConfig dict, absolute paths), optional ``storage_options`` (for
    reading s3:// images), ``init_weights`` (local weights file to fine-tune from on a fresh run)
    and ``num_threads`` (torch threads per worker). Every worker calls ``ray.train.report`` at the
    same steps (it is a barrier); only rank 0 writes checkpoints and evaluates on the validation
    split. The last report carries the final validation metrics and the final checkpoint.
    """
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cfg = TrainConfig.from_dict(config["train"])
    if not cfg.num_threads:
        cfg.num_threads = int(config.get("num_threads") or 1)
    checkpoint = ray.train.get_checkpoint()
    with contextlib.ExitStack() as stack:
        # a resumed trial is built from its checkpoint's own architecture, then restored
        ckpt_dir = stack.enter_context(checkpoint.as_directory()) if checkpoint else None
        loop = TrainingLoop(
            cfg,
            shard=(rank, world),
            device=ray.train.torch.get_device(),
            wrap_model=ray.train.torch.prepare_model,
            init_weights=str(Path(ckpt_dir) / "model.safetensors") if ckpt_dir else config.get("init_weights"),
            storage_options=config.get("storage_options") or None,
        )
        if ckpt_dir:
            loop.load_checkpoint(ckpt_dir)
    start = loop.step
    common = {"resumed_from_step": start, "world_size": world}
    final_reported = False

    def report_checkpoint(metrics: dict) -> None:
        if rank == 0:
            with tempfile.TemporaryDirectory(prefix="raybb-ckpt-") as d:
                loop.save_checkpoint(d)
                (Path(d) / "metrics.json").write_text(json.dumps(metrics, sort_keys=True))
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics, checkpoint=None)

    def on_log(m: dict) -> None:
        if m["step"] % cfg.checkpoint_every == 0 or m["step"] >= cfg.steps:
            return  # the checkpoint report at this step carries these metrics
        ray.train.report({**m, **common})

    def on_checkpoint(step: int, m: dict) -> None:
        nonlocal final_reported
        metrics = {**m, **common, "step": step}
        if step >= cfg.steps:
            metrics.update(_final_metrics(loop, rank))
            final_reported = True
        report_checkpoint(metrics)

    loop.run(on_log=on_log, on_checkpoint=on_checkpoint)
    if not final_reported:  # restored a run that had already reached its last step
        report_checkpoint({**common, "step": loop.step, **_final_metrics(loop, rank)})


def _final_metrics(loop: TrainingLoop, rank: int) -> dict:
    out = {"final": 1}
    if rank == 0:
        out.update(loop.validate())
    return out


def fit_trainer(
    train_config: TrainConfig | dict,
    *,
    name: str,
    storage_path: str,
    num_workers: int = 2,
    use_gpu: bool = False,
    resources_per_worker: dict | None = None,
    storage_options: dict | None = None,
    init_weights: str | None = None,
    num_threads: int = 1,
    max_failures: int = 0,
    num_to_keep: int = 2,
    callbacks: list | None = None,
) -> ray.train.Result:
    """Build and fit one ``TorchTrainer`` running ``train_worker`` (resumes if the run exists).

    ``storage_path`` is a local directory or a URL (``s3://bucket/prefix``); the run lives in
    ``<storage_path>/<name>``, keeping the ``num_to_keep`` latest checkpoints. Calling this again
    with the same ``name`` and ``storage_path`` continues from the latest checkpoint.
    """
    cfg = train_config if isinstance(train_config, TrainConfig) else TrainConfig.from_dict(train_config)
    d = cfg.to_dict()
    d["data"] = [_absolute(p) for p in d["data"]]
    d["val_data"] = [_absolute(p) for p in d["val_data"]]
    store = _Store(storage_path, storage_options or {})
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={
            "train": d,
            "storage_options": storage_options or {},
            "init_weights": _absolute(init_weights) if init_weights else None,
            "num_threads": num_threads,
        },
        scaling_config=ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources_per_worker
        ),
        run_config=RunConfig(
            name=name,
            storage_path=store.ray_path,
            storage_filesystem=store.ray_filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=num_to_keep),
            failure_config=FailureConfig(max_failures=max_failures),
            callbacks=callbacks or None,
        ),
    )
    return trainer.fit()


# -- the sweep --------------------------------------------------------------------------------
def _sweep_trial(config: dict, settings: dict) -> None:
    """Tune trainable: fit one (β, variant) Train run, export its final weights, report summary."""
    from ray.tune.integration.ray_train import TuneReportCallback

    beta, variant = float(config["beta"]), str(config["variant"])
    run_name = trial_run_name(variant, beta)
    train = copy.deepcopy(settings["train"])
    train["beta"] = beta
    train["model"] = {**train.get("model", {}), **MODEL_VARIANTS[variant]}
    store = _Store(settings["storage_url"], settings["storage_options"])
    result = fit_trainer(
        train,
        name=run_name,
        storage_path=store.child("runs").url,
        num_workers=settings["num_workers"],
        use_gpu=settings["use_gpu"],
        resources_per_worker=settings["resources_per_worker"],
        storage_options=settings["storage_options"] or None,
        init_weights=settings.get("init_weights"),
        num_threads=settings["num_threads"],
        max_failures=settings["max_failures"],
        callbacks=[TuneReportCallback()],
    )
    metrics = dict(result.metrics or {})
    if result.checkpoint is None or not metrics.get("final"):
        raise RuntimeError(f"{run_name}: training ended without a final checkpoint")
    val = {k: v for k, v in metrics.items() if k.startswith("val_")}
    with result.checkpoint.as_directory() as d:
        loaded = load_weights(Path(d) / "model.safetensors")
    meta = {**loaded.meta, "validation": val, "sweep": settings["name"], "run": run_name}
    with tempfile.TemporaryDirectory(prefix="raybb-export-") as tmp:
        fp = save_weights(Path(tmp) / "w.safetensors", loaded.model, meta)
        if fp != loaded.fingerprint:  # meta is outside the fingerprint: same model, same id
            raise RuntimeError(f"{run_name}: exported weights changed fingerprint")
        url = store.write_bytes(f"models/{run_name}.safetensors", (Path(tmp) / "w.safetensors").read_bytes())
    tune.report(
        {
            **val,
            "beta": beta,
            "variant": variant,
            "steps": int(metrics.get("step", 0)),
            "resumed_from_step": int(metrics.get("resumed_from_step", 0)),
            "fingerprint": fp,
            "weights": url,
            "final": 1,
        }
    )


@dataclass
class SweepResult:
    """What ``run_sweep`` returns: the summary table and where everything went."""

    table: pd.DataFrame
    experiment_url: str
    restored: bool
    registered: list = field(default_factory=list)  # raybb.registry.ModelInfo
    summary_csv: str = ""
    summary_md: str = ""

    @property
    def ok(self) -> bool:
        return bool(len(self.table)) and bool((self.table["status"] == "ok").all())


def _default_concurrency(num_workers: int, use_gpu: bool, resources_per_worker: dict | None) -> int:
    """How many trials the cluster can run at once, from its total CPUs/GPUs."""
    total = ray.cluster_resources()
    per = dict(resources_per_worker or {})
    per.setdefault("GPU" if use_gpu else "CPU", 1)
    fits = []
    for key, amount in per.items():
        if amount > 0:
            fits.append(int((total.get(key, 0) + 1e-9) // (amount * num_workers)))
    return max(1, min(fits) if fits else 1)


def _markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table (pandas' to_markdown needs tabulate, which we do not depend on)."""

    def cell(v) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4g}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def run_sweep(
    betas: Sequence[float],
    variants: Sequence[str] = (DEFAULT_VARIANT,),
    base_config: TrainConfig | dict | None = None,
    *,
    num_workers_per_trial: int = 2,
    use_gpu: bool = False,
    resources_per_worker: dict | None = None,
    storage_path: str = "~/raybb-sweeps",
    name: str = "raybb-sweep",
    max_concurrent: int | None = None,
    storage_options: dict | None = None,
    num_threads: int = 1,
    init_weights: str | None = None,
    max_failures: int = 0,
    registry_dir: str | None = None,
    family_prefix: str = "",
    overwrite_registered: bool = False,
    verbose: int = 0,
) -> SweepResult:
    """Train one model per (β, variant) with Ray Train, resumably, and summarise them.

    Everything goes under ``<storage_path>/<name>/``: the Tune experiment, ``runs/<variant>-beta<β>``
    (Train runs with checkpoints), ``models/<variant>-beta<β>.safetensors`` (final weights, normal
    raybb weights files with the validation metrics in their meta), ``summary.csv``/``summary.md``.
    Running again with the same name restores the experiment: finished trials are kept, others
    continue from their latest checkpoint. The same name with different betas/variants is refused.
    With ``registry_dir``, the finished models of each variant are registered there, ordered by
    validation rate, as ``<family_prefix><variant>-q1`` (lowest rate) … ``-qN``.
    Ray must already be initialised (``ray.init``).
    """
    betas = [float(b) for b in betas]
    if not betas or any(not (b > 0 and math.isfinite(b)) for b in betas) or len(set(betas)) != len(betas):
        raise ValueError(f"betas must be distinct positive numbers, got {betas}")
    variants = list(dict.fromkeys(variants))
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    if base_config is None:
        cfg = TrainConfig()
    elif isinstance(base_config, TrainConfig):
        cfg = base_config
    else:
        cfg = TrainConfig.from_dict(base_config)
    train = cfg.to_dict()
    if not train["data"]:  # fail here, not inside every trial
        raise ValueError("no training data: pass --data (folders or fsspec URLs) or set $RAYBB_TRAIN_DATA")
    train["data"] = [_absolute(p) for p in train["data"]]
    train["val_data"] = [_absolute(p) for p in train["val_data"]]
    options = dict(storage_options or {})
    root = _Store(storage_path, options)
    exp = root.child(name)
    spec = {"betas": sorted(betas), "variants": sorted(variants), "num_workers": num_workers_per_trial}
    old = exp.read_bytes("sweep.json")
    if old is not None:
        prev = json.loads(old)
        if {k: prev.get(k) for k in spec} != spec:
            raise ValueError(
                f"{exp.url} holds a sweep with {prev.get('betas')} × {prev.get('variants')} on "
                f"{prev.get('num_workers')} workers; use another name to sweep {spec}"
            )
    exp.write_bytes("sweep.json", json.dumps({**spec, "train": train}, indent=2).encode())
    settings = {
        "name": name,
        "train": train,
        "storage_url": exp.url,
        "storage_options": options,
        "num_workers": num_workers_per_trial,
        "use_gpu": use_gpu,
        "resources_per_worker": resources_per_worker,
        "num_threads": num_threads,
        "init_weights": _absolute(init_weights) if init_weights else None,
        "max_failures": max_failures,
    }
    trainable = tune.with_resources(tune.with_parameters(_sweep_trial, settings=settings), {"cpu": 0.01})
    if max_concurrent is None:
        max_concurrent = _default_concurrency(num_workers_per_trial, use_gpu, resources_per_worker)
    restored = tune.Tuner.can_restore(exp.ray_path, storage_filesystem=exp.ray_filesystem)
    if restored:
        tuner = tune.Tuner.restore(
            exp.ray_path,
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=exp.ray_filesystem,
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"variant": tune.grid_search(variants), "beta": tune.grid_search(betas)},
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent),
            run_config=tune.RunConfig(
                name=name,
                storage_path=root.ray_path,
                storage_filesystem=root.ray_filesystem,
                verbose=verbose,
            ),
        )
    grid = tuner.fit()
    rows = []
    for r in grid:
        m = dict(r.metrics or {})
        cfg_t = r.config or {}
        row = {c: None for c in SUMMARY_COLUMNS}
        row.update({k: m.get(k) for k in SUMMARY_COLUMNS if k in m})
        row["variant"] = cfg_t.get("variant", m.get("variant"))
        row["beta"] = float(cfg_t.get("beta", m.get("beta", math.nan)))
        done = r.error is None and m.get("final") == 1
        row["status"] = "ok" if done else "error"
        row["error"] = "" if done else (str(r.error).strip().splitlines() or ["unfinished"])[-1][:300]
        rows.append(row)
    table = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    table = table.sort_values(["variant", "val_bpp", "beta"], na_position="last").reset_index(drop=True)
    registered = []
    if registry_dir is not None:
        registered = _register(table, exp, registry_dir, family_prefix, overwrite_registered, name)
    table["registered_as"] = table["registered_as"].fillna("")
    csv_url = exp.write_bytes("summary.csv", table.to_csv(index=False).encode())
    md_url = exp.write_bytes("summary.md", _markdown(table).encode())
    return SweepResult(table, exp.url, restored, registered, csv_url, md_url)


def _register(table: pd.DataFrame, exp: _Store, registry_dir: str, prefix: str, overwrite: bool, sweep: str) -> list:
    """Register each variant's finished models, lowest validation rate first (q1)."""
    from raybb.registry import register_model

    out = []
    for variant in sorted(set(table["variant"])):
        sel = table[(table["variant"] == variant) & (table["status"] == "ok")].sort_values("val_bpp")
        for q, (idx, row) in enumerate(sel.iterrows(), start=1):
            reg_name = f"{prefix}{variant}-q{q}"
            rel = f"models/{trial_run_name(variant, row['beta'])}.safetensors"
            data = exp.read_bytes(rel)
            if data is None:
                raise FileNotFoundError(f"{exp.url}/{rel}")
            with tempfile.TemporaryDirectory(prefix="raybb-reg-") as tmp:
                p = Path(tmp) / "w.safetensors"
                p.write_bytes(data)
                val = {k: row[k] for k in table.columns if k.startswith("val_") and pd.notna(row[k])}
                info = register_model(
                    p, reg_name, registry_dir,
                    extra={"validation": val, "sweep": sweep, "beta": float(row["beta"]), "source": f"{exp.url}/{rel}"},
                    overwrite=overwrite,
                )  # fmt: skip
            table.loc[idx, "registered_as"] = reg_name
            out.append(info)
    return out


# -- command line -----------------------------------------------------------------------------
class _Renamed(argparse.Action):
    """Stores the value; warns when the option's old name (DEPRECATED_TRAIN_OPTIONS) was used."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
        if option_string in DEPRECATED_TRAIN_OPTIONS:
            new = DEPRECATED_TRAIN_OPTIONS[option_string]
            print(f"warning: {option_string} is deprecated, use {new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


class _ModelJson(argparse.Action):
    """The old ``--model JSON`` (architecture fields): still read, with a warning."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
        print("warning: --model JSON is deprecated, use --channels N,M,F,G and --variant", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _aliases(flag: str) -> list[str]:
    return [flag] + [old for old, new in DEPRECATED_TRAIN_OPTIONS.items() if new == flag]


def _add_train_options(p: argparse.ArgumentParser) -> None:
    """The options ``raybb train`` has, under the same names (raybb.train.loop.train_option_names);
    ``--beta`` and ``--variant`` take several values here: one trial per combination."""
    p.add_argument(*_aliases("--beta"), dest="beta", type=float, nargs="+", required=True, action=_Renamed,
                   help="rate weights β, one model each (higher = fewer bits)")  # fmt: skip
    p.add_argument(*_aliases("--variant"), dest="variant", nargs="+", default=[DEFAULT_VARIANT],
                   choices=sorted(VARIANTS), action=_Renamed, help=MODEL_OPTIONS["variant"])  # fmt: skip
    p.add_argument("--channels", default=None, help=MODEL_OPTIONS["channels"])
    p.add_argument("--init-weights", default=None, help="fine-tune every trial from this weights file")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("model", "arch", "beta"):
            continue
        flag = option_flag(f.name)
        kw: dict[str, Any] = {"dest": f.name, "default": None, "help": TrainConfig.help_for(f.name)}
        tp = hints[f.name]
        if f.name == "precision":
            kw["choices"] = sorted(PRECISIONS)
        elif typing.get_origin(tp) is list:
            kw["nargs"] = "+" if f.name == "data" else "*"
        else:
            kw["type"] = tp
        if f.name == "num_threads":
            kw.update(default=1, type=int, help="torch threads per worker")
        p.add_argument(*_aliases(flag), action=_Renamed, **kw)
    p.add_argument("--model", dest="model_json", default=None, action=_ModelJson, help=argparse.SUPPRESS)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="raybb sweep",
        description="Train one raybb model per β (and variant) on Ray Train via Ray Tune; resumable. "
        "The training options are those of `raybb train`.",
    )
    _add_train_options(p)
    p.add_argument("--name", default="raybb-sweep", help="sweep name (re-use it to resume)")
    p.add_argument("--storage", default="~/raybb-sweeps", help="local dir or s3://bucket/prefix")
    p.add_argument("--endpoint-url", default=None, help="S3 endpoint for storage and data (non-AWS)")
    p.add_argument("--workers", type=int, default=2, help="Ray Train workers per trial")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (NCCL)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: fit cluster)")
    p.add_argument("--max-failures", type=int, default=0, help="Train restarts per trial on worker failure")
    p.add_argument("--register-dir", default=None, help="register finished models into this registry dir")
    p.add_argument("--family-prefix", default="", help="registered names: <prefix><variant>-qN")
    p.add_argument("--overwrite-registered", action="store_true")
    p.add_argument("--address", default=None, help="Ray address ('auto' for a running cluster)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for a new local Ray instance")
    return p


def _config_from_args(a: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of the parsed options (unset ones keep TrainConfig's defaults). The variant's
    likelihood fields are added per trial; ``--channels`` (or the old ``--model JSON``) sets the rest."""
    cfg = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("model", "arch", "beta", "num_threads"):
            continue
        v = getattr(a, f.name)
        if v is not None:
            setattr(cfg, f.name, v)
    if a.model_json:
        if a.channels:
            raise ValueError("give --channels or --model, not both")
        cfg.model = json.loads(a.model_json)
    elif a.channels:
        cfg.model = parse_channels(a.channels)
    return cfg


def sweep_main(argv: Sequence[str] | None = None) -> int:
    """``raybb sweep`` / ``jobs/train_sweep.py``: parse ``argv``, run the sweep, print the table.

    Connects to ``--address`` (or ``$RAY_ADDRESS``) when given, else starts a local Ray instance.
    Returns 0 when every trial finished, 1 otherwise.
    """
    p = _parser()
    a = p.parse_args(list(argv) if argv is not None else None)
    try:
        cfg = _config_from_args(a)
    except ValueError as e:
        p.error(str(e))
    options = {"client_kwargs": {"endpoint_url": a.endpoint_url}} if a.endpoint_url else None
    resources = {"CPU": a.cpus_per_worker}
    if a.gpu:
        resources["GPU"] = 1
    address = a.address or os.environ.get("RAY_ADDRESS")
    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address)
        else:
            ray.init(num_cpus=a.num_cpus)
        started = True
    try:
        res = run_sweep(
            a.beta,
            a.variant,
            cfg,
            num_workers_per_trial=a.workers,
            use_gpu=a.gpu,
            resources_per_worker=resources,
            storage_path=a.storage,
            name=a.name,
            max_concurrent=a.max_concurrent,
            storage_options=options,
            num_threads=a.num_threads,
            init_weights=a.init_weights,
            max_failures=a.max_failures,
            registry_dir=a.register_dir,
            family_prefix=a.family_prefix,
            overwrite_registered=a.overwrite_registered,
        )
    finally:
        if started:
            with contextlib.suppress(Exception):
                ray.shutdown()
    cols = ["variant", "beta", "status", "steps", "val_bpp", "val_psnr_sample", "val_psnr_mean",
            "val_ms_ssim_mean", "registered_as", "error"]  # fmt: skip
    print(_markdown(res.table[cols]), end="")
    print(f"{'restored' if res.restored else 'new'} sweep: {res.experiment_url}\nsummary: {res.summary_csv}")
    sys.stdout.flush()
    return 0 if res.ok else 1
