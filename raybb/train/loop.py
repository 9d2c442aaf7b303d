"""The one training loop: used by ``raybb train`` and wrapped by Ray Train for β-sweeps.

Objective (per image, in nats, divided by the number of pixels)::

    loss = -log p(x | z1) + β_t · (KL[q(z2|x) ‖ p(z2)] + KL[q(z1|z2,x) ‖ p(z1|z2)])

with both KL terms analytic, z2 and z1 reparametrized samples, and β_t = β·min(1, t / warmup)
(KL warm-up: lets the decoder learn to use the latents before the rate penalty bites).
Adam with an optional exponential learning-rate decay to ``lr * lr_final_factor``.

A checkpoint is a directory holding ``model.safetensors`` (a normal raybb weights file),
``optimizer.safetensors`` (Adam moments; no pickle, so resuming from a directory someone hands
you is safe) and ``state.json`` (step, configs, sampler RNG state).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from raybb.metrics import ms_ssim, psnr
from raybb.model.arch import get_architecture
from raybb.model.ladder import VARIANTS, LadderNetwork, pad_to_stride, parse_channels, variant_of
from raybb.model.protocol import RDTerms
from raybb.model.weights import lineage, load_weights, save_weights
from raybb.train.data import PatchSampler, dataset_fingerprint, list_images, load_images

__all__ = ["TrainConfig", "TrainingLoop", "evaluate_images", "train_option_names", "model_config"]

LN2 = math.log(2.0)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


#: Environment variables naming the training and validation images when a config gives none
#: (folders or fsspec URLs, separated by commas: URLs contain colons).
TRAIN_DATA_ENV = "RAYBB_TRAIN_DATA"
VAL_DATA_ENV = "RAYBB_VAL_DATA"


def _env_paths(var: str) -> list[str]:
    return [p.strip() for p in os.environ.get(var, "").split(",") if p.strip()]


#: The architecture of the shipped models (raybb/weights/pln-q*.json: plain PLN, unit-scale
#: Laplace likelihood) and the β of the default one, pln-q3: what a training run gets by default.
DEFAULT_CHANNELS = {"N": 64, "M": 96, "F": 96, "G": 24}
DEFAULT_VARIANT = "pln"
DEFAULT_BETA = 0.05


def _default_model() -> dict:
    return {**DEFAULT_CHANNELS, **VARIANTS[DEFAULT_VARIANT]}


def _opt(default: Any = None, help: str = "", flag: str | None = None, factory: Any = None) -> Any:  # noqa: A002
    """A field with the help text (and, when it differs from the field name, the option name) that
    ``raybb train`` and ``raybb sweep`` both use."""
    meta = {"help": help, "flag": flag}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """One training run's settings; ``raybb train`` and ``raybb sweep`` expose each as
    ``--field-name`` (see :func:`train_option_names`), the API takes the fields."""

    # No built-in location: the data is wherever the user keeps it (--data, or $RAYBB_TRAIN_DATA).
    data: list[str] = _opt(help="Training image folders or fsspec URLs.", factory=lambda: _env_paths(TRAIN_DATA_ENV))
    exclude: list[str] = _opt(
        help="Skip training files whose path contains this.", factory=lambda: ["cid22/validation"]
    )
    val_data: list[str] = _opt(help="Validation image folders/URLs.", factory=lambda: _env_paths(VAL_DATA_ENV))
    val_images: int = _opt(12, "Validation images used at each evaluation (the first N, sorted).")
    #: the architecture's config fields (LadderConfig for "pln"); on the command line --channels and --variant
    model: dict = _opt(help="Architecture fields.", factory=_default_model)
    #: a registered fixed-rate architecture (raybb.model.arch); variable-rate models train with
    #: raybb.train.fast, which draws β per example
    arch: str = _opt("pln", "Architecture name.")
    beta: float = _opt(DEFAULT_BETA, "Rate weight β (higher = fewer bits).")
    steps: int = _opt(20000, "Total optimizer steps.")
    batch: int = _opt(8, "Patches per step.")
    patch: int = _opt(128, "Patch side in pixels.")
    lr: float = _opt(5e-4, "Adam learning rate.")
    lr_final_factor: float = _opt(0.2, "Exponential decay to lr × this at the last step (1 = no decay).")
    warmup_steps: int = _opt(1000, "KL warm-up steps (β ramps up linearly over them).")
    grad_clip: float = _opt(5.0, "Gradient norm clip.")
    seed: int = _opt(0, "Training RNG seed.")
    log_every: int = _opt(50, "Log training metrics every this many steps.")
    val_every: int = _opt(1000, "Validate every this many steps (0 = never).")
    checkpoint_every: int = _opt(500, "Checkpoint every this many steps.")
    num_threads: int = _opt(0, "torch threads (0 = torch's default).", flag="threads")
    # "bf16": convolutions under autocast (about 2x faster on CPUs with AMX/AVX-512-BF16 and on
    # GPUs); latent distributions, KLs, likelihood, optimizer state and weights stay float32.
    precision: str = _opt("fp32", "'fp32', or 'bf16' (convolutions in bfloat16, ~2x faster on AMX CPUs/GPUs).")

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, not {self.precision!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    @classmethod
    def help_for(cls, name: str) -> str:
        return cls.__dataclass_fields__[name].metadata.get("help", "")


#: TrainConfig fields set on the command line another way (``model``: --channels and --variant)
#: or not at all (``arch``: fixed to the PLN there).
_NOT_OPTIONS = ("model", "arch")

#: Options both training commands take besides the TrainConfig fields, with their help.
MODEL_OPTIONS = {
    "channels": "N,M,F,G channel counts (default {N},{M},{F},{G}: the shipped models').".format(**DEFAULT_CHANNELS),
    "variant": f"'pln' (unit-scale likelihood, the shipped models) or 'gamma-pln' (learned scale); "
    f"default {DEFAULT_VARIANT}.",
    "init_weights": "Start from these weights (fine-tuning).",
}

#: Old option names -> the one name now used (accepted with a warning).
DEPRECATED_TRAIN_OPTIONS = {"--warmup": "--warmup-steps", "--betas": "--beta", "--variants": "--variant"}


def option_flag(name: str) -> str:
    """``--flag`` of a TrainConfig field or a MODEL_OPTIONS key."""
    f = TrainConfig.__dataclass_fields__.get(name)
    flag = (f.metadata.get("flag") if f is not None else None) or name
    return "--" + flag.replace("_", "-")


def train_option_names() -> list[str]:
    """The options ``raybb train`` and ``raybb sweep`` share: every settable TrainConfig field,
    then ``--channels``, ``--variant``, ``--init-weights``."""
    names = [f.name for f in fields(TrainConfig) if f.name not in _NOT_OPTIONS]
    return [option_flag(n) for n in names] + [option_flag(n) for n in MODEL_OPTIONS]


def model_config(channels: str | dict | None = None, variant: str | None = None) -> dict:
    """The ``TrainConfig.model`` of ``--channels`` and ``--variant`` (defaults: the shipped models')."""
    variant = variant or DEFAULT_VARIANT
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, not {variant!r}")
    ch = parse_channels(channels) if isinstance(channels, str) else dict(channels or DEFAULT_CHANNELS)
    return {**ch, **VARIANTS[variant]}


def evaluate_images(net: LadderNetwork, images: Sequence[torch.Tensor], seed: int = 0) -> dict:
    """Validation metrics of ``net`` on whole (3,H,W) uint8 images, averaged over the images.

    ``val_bpp`` is the theoretical rate (KL of both levels, bits per pixel), which a coded sample
    reaches up to a small overhead; PSNR and MS-SSIM (raybb.metrics, the project's single
    implementation) are computed for the reconstruction of a posterior *sample* (what the codec
    transmits) and of the posterior *mean*. Sampling noise is seeded, so reruns agree. Used by
    ``TrainingLoop.validate`` and so by ``raybb train`` and the Ray Train sweep alike.
    """
    if not images:
        return {}
    device = next(net.parameters()).device  # validation runs where the model trains (CPU or GPU)
    acc: dict[str, list[float]] = {}
    was_training = net.training
    net.eval()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for img in images:
            img = img.cpu()
            ref = img.permute(1, 2, 0).contiguous().numpy()
            x = img.float().div(255.0)[None].to(device)
            xp, (h, w) = pad_to_stride(x)
            n = h * w
            for mode, sample in (("sample", True), ("mean", False)):
                out = _terms(net(xp, sample=sample))
                rec = out.x_hat[0, :, :h, :w].clamp(0, 1).mul(255).round().to(torch.uint8)
                rec_np = rec.permute(1, 2, 0).cpu().contiguous().numpy()
                acc.setdefault(f"val_psnr_{mode}", []).append(psnr(ref, rec_np))
                acc.setdefault(f"val_ms_ssim_{mode}", []).append(ms_ssim(ref, rec_np))
                if sample:
                    b2 = float(out.kl_by_level[2].sum()) / LN2 / n if 2 in out.kl_by_level else 0.0
                    acc.setdefault("val_bpp", []).append(float(out.kl.sum()) / LN2 / n)
                    acc.setdefault("val_bpp_level2", []).append(b2)
    net.train(was_training)
    res = {k: float(np.mean(v)) for k, v in acc.items()}
    res["val_images"] = len(images)
    return res


def _terms(out) -> RDTerms:
    """The loss terms of a forward pass: the PLN's LadderOutput or any model's RDTerms."""
    if isinstance(out, RDTerms):
        return out
    return RDTerms(x_hat=out.x_hat, nll=out.nll, kl=out.kl1 + out.kl2, kl_by_level={2: out.kl2, 1: out.kl1})


def _trainable(net: LadderNetwork) -> LadderNetwork:
    """Undo ``load_weights``' inference-only ``requires_grad_(False)`` as a fresh model has it: the
    fixed scale of the plain PLN (``learn_scale=False``) stays frozen. Otherwise DDP registers a
    parameter that never gets a gradient and fails on the second step."""
    net.requires_grad_(True)
    net.likelihood.raw_gamma.requires_grad_(net.config.learn_scale)
    return net


class TrainingLoop:
    """Owns model, optimizer, data and step counter; ``run`` drives it with callbacks.

    ``wrap_model`` lets Ray Train wrap the module in DDP; ``shard`` gives each data-parallel worker
    its own part of the images.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        shard: tuple[int, int] = (0, 1),
        device: str | torch.device = "cpu",
        wrap_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
        init_weights: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ):
        self.cfg = cfg
        self.rank, self.world = shard
        self.device = torch.device(device)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        torch.manual_seed(cfg.seed * 1000 + self.rank)
        #: the weights this run was initialised from (recorded in every checkpoint's meta)
        self.fine_tuned_from: dict | None = None
        if init_weights:  # fine-tune from a weights file (e.g. another β of the family)
            init = load_weights(init_weights)
            self.net = _trainable(init.model.train())
            self.fine_tuned_from = lineage(init, Path(init_weights).stem)
            # the weights fix the architecture (whatever ``cfg.model`` said): record the real one,
            # so checkpoints' train_config and config.json describe the model actually trained
            self.cfg = cfg = replace(cfg, model=init.config.to_dict(), arch=init.arch)
        else:
            arch = get_architecture(cfg.arch)
            self.net = arch.build(arch.config_from_dict(cfg.model))
        if self.net.rate_levels:
            raise ValueError("a variable-rate model needs β per example: train it with raybb.train.fast")
        self.net.to(self.device)
        self.net.compute_dtype = PRECISIONS[cfg.precision]
        # bf16 convolutions are ~20% faster in channels-last layout (oneDNN/AMX, tensor cores);
        # the layout is invisible elsewhere (checkpoints are written contiguous).
        self.channels_last = cfg.precision == "bf16"
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.model = wrap_model(self.net) if wrap_model else self.net
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.step = 0
        if not cfg.data:
            raise ValueError(f"no training data: pass --data (folders or fsspec URLs) or set ${TRAIN_DATA_ENV}")
        #: fsspec options for reading s3:// images (kept out of ``cfg``: they may hold credentials)
        self.storage_options = storage_options
        self.train_paths = list_images(cfg.data, tuple(cfg.exclude), storage_options)
        self.sampler = PatchSampler(
            load_images(self.train_paths, shard, min_size=cfg.patch, storage_options=storage_options),
            cfg.patch,
            seed=cfg.seed * 1000 + self.rank,
        )
        self.val_set: list[torch.Tensor] = []
        if cfg.val_data and self.rank == 0:
            vp = list_images(cfg.val_data, storage_options=storage_options)[: cfg.val_images]
            self.val_set = load_images(vp, storage_options=storage_options) if vp else []
        self._data_fp: str | None = None

    # -- schedule -------------------------------------------------------------------------
    def beta_at(self, step: int) -> float:
        return self.cfg.beta * min(1.0, (step + 1) / max(self.cfg.warmup_steps, 1))

    def lr_at(self, step: int) -> float:
        return self.cfg.lr * self.cfg.lr_final_factor ** (step / max(self.cfg.steps, 1))

    # -- one step -------------------------------------------------------------------------
    def train_step(self) -> dict:
        self.model.train()
        x = self.sampler.sample(self.cfg.batch).to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        beta = self.beta_at(self.step)
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step)
        out = _terms(self.model(x))
        pixels = x.shape[-1] * x.shape[-2]
        kl = out.kl
        loss = ((out.nll + beta * kl) / pixels).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {self.step}")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.step += 1
        with torch.no_grad():
            mse = (out.x_hat.clamp(0, 1) - x).pow(2).mean().item()
        return {
            "step": self.step,
            "loss": loss.item(),
            "beta": beta,
            "lr": self.lr_at(self.step - 1),
            "bpp": (kl / pixels).mean().item() / LN2,
            "bpp_level2": (out.kl_by_level[2] / pixels).mean().item() / LN2 if 2 in out.kl_by_level else 0.0,
            "psnr": 10 * math.log10(1.0 / max(mse, 1e-10)),
            "gamma": self.net.likelihood.gamma().mean().item() * 255,
            "grad_norm": float(gnorm),
        }

    def validate(self) -> dict:
        """``evaluate_images`` on the validation set ({} without one), in float32 as the codec runs."""
        if not self.val_set:
            return {}
        self.net.compute_dtype = None
        try:
            return evaluate_images(self.net, self.val_set, seed=self.cfg.seed)
        finally:
            self.net.compute_dtype = PRECISIONS[self.cfg.precision]

    # -- checkpoints ----------------------------------------------------------------------
    def data_fingerprint(self) -> str:
        if self._data_fp is None:
            self._data_fp = dataset_fingerprint(self.train_paths, self.storage_options)
        return self._data_fp

    def model_meta(self) -> dict:
        return {
            "beta": self.cfg.beta,
            "steps": self.step,
            "variant": variant_of(self.net.config) if self.net.arch == "pln" else self.net.arch,
            "train_config": self.cfg.to_dict(),
            "dataset_fingerprint": self.data_fingerprint(),
            "dataset_files": len(self.train_paths),
            "fine_tuned_from": self.fine_tuned_from,
        }

    def save_checkpoint(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_weights(d / "model.safetensors", self.net, self.model_meta())
        opt_t: dict[str, torch.Tensor] = {}
        for i, p in enumerate(self.net.parameters()):
            st = self.opt.state.get(p)
            if st:
                opt_t[f"{i}.exp_avg"] = st["exp_avg"].detach().cpu().contiguous()
                opt_t[f"{i}.exp_avg_sq"] = st["exp_avg_sq"].detach().cpu().contiguous()
                opt_t[f"{i}.step"] = torch.as_tensor(st["step"]).reshape(1).float().cpu()
        save_file(opt_t, str(d / "optimizer.safetensors"))
        rng = self.sampler.gen.get_state()
        state = {"step": self.step, "train_config": self.cfg.to_dict(), "sampler_rng": rng.tolist()}
        (d / "state.json").write_text(json.dumps(state))
        return d

    def load_checkpoint(self, directory: str | Path) -> None:
        d = Path(directory)
        loaded = load_weights(d / "model.safetensors", device=self.device)
        if loaded.config != self.net.config:
            raise ValueError(f"checkpoint architecture {loaded.config} differs from {self.net.config}")
        self.net.load_state_dict(loaded.model.state_dict())
        _trainable(self.net)
        self.fine_tuned_from = loaded.meta.get("fine_tuned_from")  # a resumed run keeps its lineage
        state = json.loads((d / "state.json").read_text())
        self.step = int(state["step"])
        if (d / "optimizer.safetensors").exists():
            opt_t = load_file(str(d / "optimizer.safetensors"))
            for i, p in enumerate(self.net.parameters()):
                if f"{i}.exp_avg" in opt_t:
                    self.opt.state[p] = {
                        "step": torch.tensor(float(opt_t[f"{i}.step"].item())),
                        "exp_avg": torch.empty_like(p).copy_(opt_t[f"{i}.exp_avg"]),  # p's layout
                        "exp_avg_sq": torch.empty_like(p).copy_(opt_t[f"{i}.exp_avg_sq"]),
                    }
        if self.rank == 0 and "sampler_rng" in state:
            self.sampler.gen.set_state(torch.tensor(state["sampler_rng"], dtype=torch.uint8))

    # -- driver ---------------------------------------------------------------------------
    def run(
        self,
        *,
        on_log: Callable[[dict], None] | None = None,
        on_checkpoint: Callable[[int, dict], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> dict:
        """Train until ``cfg.steps``. ``on_checkpoint(step, metrics)`` is called at each checkpoint
        boundary (the caller decides where to save: a folder, or ``ray.train.report``)."""
        last: dict = {}
        t0 = time.time()
        acc: dict[str, float] = {}
        n = 0
        while self.step < self.cfg.steps:
            m = self.train_step()
            for k, v in m.items():
                acc[k] = acc.get(k, 0.0) + float(v)
            n += 1
            if self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps:
                last = {k: v / n for k, v in acc.items()}
                last["step"] = self.step
                last["steps_per_s"] = n / max(time.time() - t0, 1e-9)
                acc, n, t0 = {}, 0, time.time()
                if self.cfg.val_every and (self.step % self.cfg.val_every == 0 or self.step == self.cfg.steps):
                    last.update(self.validate())
                if on_log:
                    on_log(dict(last))
            if on_checkpoint and (self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.steps):
                on_checkpoint(self.step, dict(last))
            if should_stop and should_stop():
                break
        return last


def train_to_directory(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = True,
    init_weights: str | None = None,
    on_log: Callable[[dict], None] | None = None,
    device: str | torch.device = "cpu",
) -> dict:
    """``raybb train``: train into ``out_dir`` (checkpoint/, metrics.jsonl, config.json), resuming
    from ``out_dir/checkpoint`` when it exists. Checkpoints are written to a temporary directory and
    renamed, so an interrupted save never leaves a half checkpoint behind. ``device`` (e.g. "cuda")
    only moves the work: checkpoints are written from CPU tensors either way."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint"
    _recover_interrupted_save(ckpt, out / "checkpoint.old")
    resuming = resume and ckpt.exists()
    # a resumed run is built from its checkpoint's own architecture (a fine-tuned or widened model
    # need not match ``cfg.model``); load_checkpoint then restores step, optimizer and lineage
    start_from = str(ckpt / "model.safetensors") if resuming else init_weights
    loop = TrainingLoop(cfg, init_weights=start_from, device=device)
    if resuming:
        loop.load_checkpoint(ckpt)
    (out / "config.json").write_text(json.dumps(loop.cfg.to_dict(), indent=2))
    log_path = out / "metrics.jsonl"

    def log(m: dict) -> None:
        with log_path.open("a") as f:
            f.write(json.dumps(m) + "\n")
        if on_log:
            on_log(m)

    def checkpoint(step: int, metrics: dict) -> None:
        tmp = out / "checkpoint.tmp"
        if tmp.exists():
            _rmtree(tmp)
        loop.save_checkpoint(tmp)
        old = out / "checkpoint.old"
        if old.exists():  # left by an earlier interrupted save: renaming onto it would fail
            _rmtree(old)
        if ckpt.exists():
            ckpt.replace(old)
        tmp.replace(ckpt)
        if old.exists():
            _rmtree(old)

    last = loop.run(on_log=log, on_checkpoint=checkpoint)
    return last


def _recover_interrupted_save(ckpt: Path, old: Path) -> None:
    """A save is rename(checkpoint -> .old), rename(.tmp -> checkpoint), rmtree(.old); both renamed
    directories are complete. A kill between the renames leaves only ``.old`` (it is the latest
    checkpoint: restore it instead of restarting from step 0); a kill before the rmtree leaves
    both (``.old`` is stale)."""
    if old.exists():
        if ckpt.exists():
            _rmtree(old)
        else:
            old.replace(ckpt)


def _rmtree(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)
