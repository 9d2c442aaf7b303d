"""Training that saturates one GPU inside a short device window (``python -m raybb.train.fast``).

Everything a step needs lives on the device: the whole training set is decoded once into one
flat uint8 buffer in device memory, and each step gathers a batch of random crops (with random
horizontal flips) from it with one indexing operation, so the GPU never waits for a data loader.
The networks run under bf16 autocast in channels-last layout (latent Gaussians, KLs, likelihood,
optimizer state and master weights stay float32), optionally through ``torch.compile``.

A variable-rate model (channel-ladder with ``beta_anchors > 0``) gets one β per example, drawn
log-uniformly over its [beta_min, beta_max]; each example's loss (nll + β·KL)/pixels is weighted
by β^-p (``--beta-weight-power``, 0.5 by default: without it the lowest-rate examples, whose loss
is ~10× larger, would dominate the batch gradient; with p=1 the highest-rate ones would).

The run stops after ``--minutes`` of wall-clock time from its start (data loading included),
writes checkpoints every ``--checkpoint-minutes``, and leaves in ``--out``:

* ``model.safetensors`` — the weights as float16 (a normal raybb weights file), or, when that
  would exceed ``--max-file-mib``, ``model-00001-of-0000N.safetensors`` … shards that
  ``load_run_weights`` merges and verifies against the one fingerprint;
* ``manifest.json`` — lineage (the weights it started from and their manifest's lineage), steps
  and training pixels accumulated over every window, throughput (pixels/s, achieved TFLOP/s),
  device, data, configuration and the last validation;
* ``metrics.jsonl`` — the log.

That is at most 2 + shards files, each below the device tool's 16 MiB return limit.
``--init-weights`` (a weights file or such a folder) continues from earlier weights, so training
accumulates across GPU windows; the optimizer state is not kept (it would not fit the limits), so
each window starts Adam afresh with a short learning-rate warm-up. ``tools/gpu_train.sh`` is the
prepared command.

The options that mean what a ``raybb train`` option means have its name (``--steps``,
``--warmup-steps``, ``--beta``, ``--channels``, ``--init-weights``, ``--threads``, ...; the old
``--max-steps``, ``--kl-warmup-steps`` and ``--init`` still work and warn); the rest are this
trainer's own (``--minutes``, ``--checkpoint-minutes``, ``--lr-warmup-steps``, ``--model JSON``...).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as st_load_bytes
from safetensors.torch import save as st_save_bytes

from raybb.model.arch import get_architecture
from raybb.model.ladder import VARIANTS, pad_to_stride, parse_channels
from raybb.model.weights import LoadedModel, load_weights, save_weights

__all__ = [
    "FastConfig",
    "DeviceImages",
    "load_image_folder",
    "save_run_weights",
    "load_run_weights",
    "train",
    "config_from_args",
    "main",
]

LN2 = math.log(2.0)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".ppm", ".bmp")
MANIFEST = "manifest.json"


@dataclass
class FastConfig:
    """One GPU window's settings; a field that is also a TrainConfig field (or ``init_weights``)
    means the same thing and has the same option (:data:`SHARED_OPTIONS`)."""

    out: str = "runs/fast"
    data: list[str] = field(default_factory=lambda: [".gpu/data/train"])
    val_data: list[str] = field(default_factory=lambda: [".gpu/data/val"])
    val_images: int = 4
    arch: str = "channel-ladder"
    model: dict = field(default_factory=dict)  # config fields of the architecture
    init_weights: str | None = None  # weights file or run folder to continue from
    beta: float | None = None  # fixed-rate models: the β; variable-rate: None (sampled per example)
    beta_weight_power: float = 0.5
    val_rates: int = 4  # variable-rate models: validate at this many rate indices across the range
    minutes: float = 8.0
    steps: int = 0  # 0 = until the time is up
    checkpoint_minutes: float = 2.0
    batch: int = 32
    patch: int = 256
    lr: float = 1e-4
    lr_warmup_steps: int = 200
    lr_final_factor: float = 0.1  # cosine decay to lr * this over the last ``decay_fraction`` of the time
    decay_fraction: float = 0.25
    warmup_steps: int = 2000  # KL warm-up; fresh models only (0 when continuing from --init-weights)
    grad_clip: float = 5.0
    device: str = "cuda"
    precision: str = "bf16"  # bf16 | fp32
    channels_last: bool = True
    compile: bool = False
    seed: int = 0
    num_threads: int = 0  # torch threads (0 = torch's default)
    max_images: int = 0  # 0 = all
    max_file_mib: float = 15.9  # the device tool returns files of at most 16 MiB
    log_every: int = 50
    peak_tflops: float = 790.0  # the chip's dense bf16 rate, measured on an H200 here (KINDS.md)


# -- data --------------------------------------------------------------------------------------
def _list(roots: list[str]) -> list[Path]:
    out: list[Path] = []
    for r in roots:
        p = Path(r)
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out += [f for f in sorted(p.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(set(out))


def _decode(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def load_image_folder(roots: list[str], max_images: int = 0, threads: int = 8) -> tuple[list[np.ndarray], str]:
    """Every image under ``roots`` as HxWx3 uint8 (decoded in parallel), and a SHA-256 naming them."""
    paths = _list(roots)
    if max_images:
        paths = paths[:max_images]
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    with ThreadPoolExecutor(max(1, threads)) as ex:
        images = list(ex.map(_decode, paths))
    return images, h.hexdigest()


class DeviceImages:
    """All training images in one flat uint8 buffer on the device; ``sample`` gathers a batch of
    random crops with random horizontal flips in one indexing operation (no host round trip)."""

    def __init__(self, images: list[np.ndarray], patch: int, device: torch.device, seed: int = 0):
        keep = [im for im in images if min(im.shape[:2]) >= patch]
        if not keep:
            raise ValueError(f"no training image is at least {patch}x{patch}")
        self.skipped = len(images) - len(keep)
        self.patch = patch
        self.device = device
        flat = [torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))).reshape(-1) for im in keep]
        sizes = [f.numel() for f in flat]
        self.buffer = torch.cat(flat).to(device)
        self.offset = torch.tensor([0, *np.cumsum(sizes)[:-1].tolist()], dtype=torch.int64, device=device)
        self.height = torch.tensor([im.shape[0] for im in keep], dtype=torch.int64, device=device)
        self.width = torch.tensor([im.shape[1] for im in keep], dtype=torch.int64, device=device)
        self.count = len(keep)
        self.pixels = int(sum(im.shape[0] * im.shape[1] for im in keep))
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self._ar = torch.arange(patch, device=device)
        self._ch = torch.arange(3, device=device).view(1, 3, 1, 1)

    def sample(self, batch: int) -> torch.Tensor:
        """(batch, 3, patch, patch) float32 in [0, 1] on the device."""
        P, g = self.patch, self.gen
        i = torch.randint(self.count, (batch,), generator=g, device=self.device)
        h, w = self.height[i], self.width[i]
        y = (torch.rand(batch, generator=g, device=self.device) * (h - P + 1)).long()
        x = (torch.rand(batch, generator=g, device=self.device) * (w - P + 1)).long()
        flip = torch.rand(batch, generator=g, device=self.device) < 0.5
        cols = torch.where(flip[:, None], P - 1 - self._ar[None, :], self._ar[None, :]) + x[:, None]  # (B,P)
        rows = y[:, None] + self._ar[None, :]  # (B,P)
        base = self.offset[i].view(-1, 1, 1, 1) + self._ch * (h * w).view(-1, 1, 1, 1)
        idx = base + rows.view(batch, 1, P, 1) * w.view(-1, 1, 1, 1) + cols.view(batch, 1, 1, P)
        return self.buffer[idx].float().div_(255.0)


# -- weights in files that fit the device tool's return limits ----------------------------------
def save_run_weights(out: Path, model: torch.nn.Module, meta: dict, max_file_mib: float) -> tuple[str, list[str]]:
    """Write float16 weights to ``out`` as one raybb weights file, or as shards when one file would
    exceed ``max_file_mib``; returns (fingerprint, file names). Writes are atomic per file and stale
    files of the other layout are removed."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "model.safetensors.tmp-full"
    fp = save_weights(tmp, model, meta, dtype=torch.float16)
    data = tmp.read_bytes()
    limit = int(max_file_mib * 2**20)
    if len(data) <= limit:
        tmp.replace(out / "model.safetensors")
        names = ["model.safetensors"]
    else:
        tmp.unlink()
        header_len = int.from_bytes(data[:8], "little")
        md = json.loads(data[8 : 8 + header_len])["__metadata__"]
        state = st_load_bytes(data)
        groups: list[list[str]] = [[]]
        size = 0
        for k in sorted(state):
            n = state[k].numel() * state[k].element_size()
            if groups[-1] and size + n > limit - 2**20:  # 1 MiB for the header
                groups.append([])
                size = 0
            groups[-1].append(k)
            size += n
        names = [f"model-{j + 1:05d}-of-{len(groups):05d}.safetensors" for j in range(len(groups))]
        for j, (name, keys) in enumerate(zip(names, groups, strict=True)):
            shard_md = {**md, "raybb.shard": f"{j + 1}/{len(groups)}"}
            part = out / (name + ".tmp")
            part.write_bytes(st_save_bytes({k: state[k] for k in keys}, metadata=shard_md))
            part.replace(out / name)
    for old in out.glob("model*.safetensors"):
        if old.name not in names:
            old.unlink()
    return fp, names


def load_run_weights(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """A weights file, or a run folder written by ``save_run_weights`` (one file or shards: the shards
    are merged and checked against the fingerprint like any weights file)."""
    p = Path(path)
    if p.is_file():
        return load_weights(p, device=device)
    if (p / "model.safetensors").is_file():
        return load_weights(p / "model.safetensors", device=device)
    shards = sorted(p.glob("model-*-of-*.safetensors"))
    if not shards:
        from raybb.errors import WeightsError

        raise WeightsError(f"{p}: no model.safetensors or model-*-of-*.safetensors")
    state: dict[str, torch.Tensor] = {}
    md: dict = {}
    for s in shards:
        data = s.read_bytes()
        header_len = int.from_bytes(data[:8], "little")
        smd = dict(json.loads(data[8 : 8 + header_len]).get("__metadata__") or {})
        smd.pop("raybb.shard", None)
        if md and smd != md:
            from raybb.errors import WeightsError

            raise WeightsError(f"{s}: shard metadata differs from the first shard's")
        md = smd
        state.update(st_load_bytes(data))
    return load_weights(st_save_bytes(state, metadata=md), device=device)


# -- training ----------------------------------------------------------------------------------
def _git_commit() -> str | None:
    try:
        head = Path(".git/HEAD").read_text().strip() if Path(".git/HEAD").is_file() else None
        if head and head.startswith("ref: "):
            ref = Path(".git") / head[5:]
            return ref.read_text().strip() if ref.is_file() else head[5:]
        return head
    except OSError:
        return None


def _flops_per_pixel(model, dev: torch.device, variable: bool, patch: int = 128) -> float | None:
    """Forward+backward FLOPs per training pixel, counted by torch on one small batch."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:  # pragma: no cover - torch < 2.1
        return None
    x = torch.rand(2, 3, patch, patch, device=dev)
    beta = torch.full((2,), 1.0, device=dev) if variable else None
    if variable:
        c = model.config
        beta = torch.full((2,), math.sqrt(c.beta_min * c.beta_max), device=dev)
    with FlopCounterMode(display=False) as fc:
        t = model.rd_terms(x, beta)
        (t.nll.mean() + t.kl.mean()).backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops() / (2 * patch * patch)


def _validate(model, images: list[torch.Tensor], betas: list[float | None], dev: torch.device) -> list[dict]:
    """Theoretical rate (KL, bits per pixel) and PSNR of a coded-sample-like reconstruction (one
    posterior sample, fixed seed) on whole held-out images, in float32, per β."""
    old = model.compute_dtype
    model.compute_dtype = None
    model.eval()
    rows = []
    try:
        with torch.no_grad():
            for b in betas:
                torch.manual_seed(0)
                bits = mse_db = 0.0
                for img in images:
                    x = img.to(dev).float().div(255.0)[None]
                    xp, (h, w) = pad_to_stride(x, model.pad_stride)
                    beta = None if b is None or not model.rate_levels else torch.tensor([b], device=dev)
                    t = model.rd_terms(xp, beta)
                    xh = t.x_hat[..., :h, :w].clamp(0, 1).mul(255).round()
                    mse = (xh - img.to(dev).float()[None]).pow(2).mean().item()
                    bits += t.kl.item() / LN2 / (h * w)
                    mse_db += 10 * math.log10(255**2 / max(mse, 1e-10))
                k = max(len(images), 1)
                rows.append({"beta": b, "bpp_kl": bits / k, "psnr": mse_db / k})
    finally:
        model.compute_dtype = old
        model.train()
    return rows


def _lineage(init: LoadedModel | None, init_path: str | None) -> dict | None:
    if init is None:
        return None
    prev = None
    p = Path(init_path) if init_path else None
    if p is not None and p.is_dir() and (p / MANIFEST).is_file():
        with contextlib.suppress(OSError, ValueError):
            prev = json.loads((p / MANIFEST).read_text())
    return {
        "path": init_path,
        "fingerprint": init.fingerprint,
        "arch": init.arch,
        "steps_total": (prev or {}).get("steps_total", init.meta.get("steps_total", init.meta.get("steps"))),
        "pixels_total": (prev or {}).get("pixels_total", init.meta.get("pixels_total")),
        "lineage": (prev or {}).get("lineage", init.meta.get("lineage")),
    }


def train(cfg: FastConfig, on_log=None) -> dict:
    """Run one training window; returns the final manifest."""
    t_start = time.time()
    deadline = t_start + cfg.minutes * 60.0
    dev = torch.device(cfg.device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # training only; the codec turns TF32 off
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "metrics.jsonl"

    def log(m: dict) -> None:
        with log_path.open("a") as f:
            f.write(json.dumps(m) + "\n")
        if on_log:
            on_log(m)

    # model --------------------------------------------------------------------------------
    init = load_run_weights(cfg.init_weights) if cfg.init_weights else None
    if init is not None:
        arch = get_architecture(init.arch)
        net = init.model
        net.requires_grad_(True)
        lik = getattr(net, "likelihood", None)
        if lik is not None:
            lik.raw_gamma.requires_grad_(bool(net.config.learn_scale))
        config = init.config
    else:
        arch = get_architecture(cfg.arch)
        config = arch.config_from_dict(cfg.model)
        net = arch.build(config)
    variable = bool(net.rate_levels)
    if cfg.patch % net.pad_stride:
        raise ValueError(f"--patch must be a multiple of {net.pad_stride}, not {cfg.patch}")
    if not variable and cfg.beta is None:
        raise ValueError("a fixed-rate model needs --beta")
    net.to(dev).train()
    if cfg.channels_last:
        net.to(memory_format=torch.channels_last)
    net.compute_dtype = torch.bfloat16 if cfg.precision == "bf16" else None
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, **({"fused": True} if dev.type == "cuda" else {}))
    step_fn = torch.compile(net.rd_terms) if cfg.compile else net.rd_terms
    flops_px = _flops_per_pixel(net, dev, variable)

    # data ---------------------------------------------------------------------------------
    threads = os.cpu_count() or 2
    images, data_fp = load_image_folder(cfg.data, cfg.max_images, threads)
    data = DeviceImages(images, cfg.patch, dev, seed=cfg.seed)
    del images
    val_np, _ = load_image_folder(cfg.val_data, cfg.val_images, threads) if cfg.val_data else ([], "")
    val = [torch.from_numpy(np.ascontiguousarray(v.transpose(2, 0, 1))) for v in val_np]
    if variable:
        c = net.config
        val_betas = [c.beta_of_rate(round(r)) for r in np.linspace(0, c.rate_levels - 1, max(cfg.val_rates, 1))]
    else:
        val_betas = [cfg.beta]
    t_ready = time.time()

    lineage = _lineage(init, cfg.init_weights)
    steps0 = int((lineage or {}).get("steps_total") or 0)
    pixels0 = int((lineage or {}).get("pixels_total") or 0)
    kl_warm = 0 if init is not None else cfg.warmup_steps
    train_seconds = max(deadline - t_ready, 1.0)
    log(
        {"event": "start", "setup_s": round(t_ready - t_start, 2), "images": data.count, "skipped": data.skipped,
         "train_pixels": data.pixels, "device": str(dev), "flops_per_pixel": flops_px}
    )  # fmt: skip

    def lr_at(step: int, now: float) -> float:
        warm = min(1.0, (step + 1) / max(cfg.lr_warmup_steps, 1))
        frac = (now - t_ready) / train_seconds
        start = 1.0 - cfg.decay_fraction
        decay = 1.0
        if cfg.decay_fraction > 0 and frac > start:
            u = min((frac - start) / cfg.decay_fraction, 1.0)
            decay = cfg.lr_final_factor + (1 - cfg.lr_final_factor) * 0.5 * (1 + math.cos(math.pi * u))
        return cfg.lr * warm * decay

    def manifest(step: int, seconds: float, val_rows: list[dict], files: list[str], fp: str, final: bool) -> dict:
        px = step * cfg.batch * cfg.patch**2
        rate = px / max(seconds, 1e-9)
        m = {
            "final": final,
            "arch": arch.name,
            "config": config.to_dict(),
            "fingerprint": fp,
            "files": files,
            "steps": step,
            "steps_total": steps0 + step,
            "pixels": px,
            "pixels_total": pixels0 + px,
            "train_seconds": round(seconds, 1),
            "setup_seconds": round(t_ready - t_start, 1),
            "train_pixels_per_s": rate,
            "flops_per_pixel": flops_px,
            "achieved_tflops": rate * flops_px / 1e12 if flops_px else None,
            "fraction_of_peak_bf16": rate * flops_px / 1e12 / cfg.peak_tflops if flops_px else None,
            "validation": val_rows,
            "data_fingerprint": data_fp,
            "data_images": data.count,
            "data_pixels": data.pixels,
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__,
            "git_commit": _git_commit(),
            "train_config": asdict(cfg),
            "lineage": lineage,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        return m

    def save(step: int, seconds: float, final: bool) -> dict:
        rows = _validate(net, val, val_betas, dev) if val else []
        meta = {
            "steps": steps0 + step,
            "steps_total": steps0 + step,
            "pixels_total": pixels0 + step * cfg.batch * cfg.patch**2,
            "beta": cfg.beta,
            "variant": arch.name,
            "data_fingerprint": data_fp,
            "lineage": lineage,
            "trainer": "raybb.train.fast",
        }
        fp, files = save_run_weights(out, net, meta, cfg.max_file_mib)
        m = manifest(step, seconds, rows, files, fp, final)
        tmp = out / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(m, indent=2))
        tmp.replace(out / MANIFEST)
        log({"event": "checkpoint", "step": step, "validation": rows, "files": files})
        return m

    # loop ---------------------------------------------------------------------------------
    step = 0
    next_ckpt = t_ready + cfg.checkpoint_minutes * 60.0
    lo, hi = (math.log(net.config.beta_min), math.log(net.config.beta_max)) if variable else (0.0, 0.0)
    acc_t = torch.zeros(3, device=dev)
    n_acc = 0
    paused = 0.0
    t_log = time.time()
    gen = torch.Generator(device=dev).manual_seed(cfg.seed + 1)
    pixels = cfg.patch * cfg.patch
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    while True:
        now = time.time()
        if now >= deadline or (cfg.steps and step >= cfg.steps):
            break
        x = data.sample(cfg.batch)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if variable:
            beta = torch.exp(lo + (hi - lo) * torch.rand(cfg.batch, generator=gen, device=dev))
        else:
            beta = torch.full((cfg.batch,), float(cfg.beta), device=dev)
        for gp in opt.param_groups:
            gp["lr"] = lr_at(step, now)
        t = step_fn(x, beta if variable else None)
        warm = min(1.0, (step + 1) / kl_warm) if kl_warm else 1.0
        per = (t.nll + warm * beta * t.kl) / pixels * beta.pow(-cfg.beta_weight_power)
        loss = per.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        step += 1
        with torch.no_grad():  # accumulated on the device: no host sync between log lines
            acc_t += torch.stack([loss.detach(), (t.kl / pixels).mean() / LN2, gnorm.float()])
        n_acc += 1
        if step % cfg.log_every == 0:
            sync()
            dt = time.time() - t_log
            vals = (acc_t / n_acc).tolist()
            if not math.isfinite(vals[0]):
                raise FloatingPointError(f"non-finite loss before step {step}")
            m = dict(zip(("loss", "bpp", "grad_norm"), vals, strict=True))
            m.update(step=step, lr=lr_at(step, time.time()), px_per_s=n_acc * cfg.batch * pixels / max(dt, 1e-9))
            log(m)
            acc_t.zero_()
            n_acc, t_log = 0, time.time()
        if time.time() >= next_ckpt:
            sync()
            t_save = time.time()
            save(step, t_save - t_ready - paused, final=False)
            paused += time.time() - t_save  # checkpoints and validation are not training time
            t_log += time.time() - t_save
            next_ckpt = time.time() + cfg.checkpoint_minutes * 60.0
    sync()
    seconds = time.time() - t_ready - paused
    final = save(step, seconds, final=True)
    log({"event": "done", "steps": step, "train_pixels_per_s": final["train_pixels_per_s"],
         "fraction_of_peak_bf16": final["fraction_of_peak_bf16"],
         "wall_s": round(time.time() - t_start, 1)})  # fmt: skip
    return final


#: The options that mean what a ``raybb train``/``raybb sweep`` option means carry its name
#: (raybb.train.loop.train_option_names; ``--channels``, ``--variant``, ``--init-weights`` too), and
#: their FastConfig field is TrainConfig's. Written out rather than imported: raybb.train.loop pulls
#: in packages the GPU image lacks (tests/train_loop/test_fast.py checks the names agree).
SHARED_OPTIONS = {
    "data": "Training image folders/files (tools/pack_train_data.py).",
    "val_data": "Validation image folders/files.",
    "val_images": "Validation images used at each checkpoint (the first N, sorted).",
    "init_weights": "Continue from a weights file or a run folder (earlier windows' lineage is kept).",
    "beta": "Rate weight β of a fixed-rate model (a variable-rate model draws β per example).",
    "steps": "Stop after this many optimizer steps (0 = when --minutes are up).",
    "batch": "Patches per step.",
    "patch": "Patch side in pixels.",
    "lr": "Adam learning rate (after --lr-warmup-steps).",
    "lr_final_factor": "Cosine decay to lr × this over the last quarter of the time.",
    "warmup_steps": "KL warm-up steps (β ramps up linearly; fresh models only).",
    "grad_clip": "Gradient norm clip.",
    "seed": "Training RNG seed.",
    "log_every": "Log training metrics every this many steps.",
    "num_threads": "torch threads (0 = torch's default).",
    "precision": "'bf16' (autocast, the GPU default) or 'fp32'.",
}

#: Option names this trainer had before it took TrainConfig's (accepted with a warning).
DEPRECATED_OPTIONS = {"--max-steps": "--steps", "--kl-warmup-steps": "--warmup-steps", "--init": "--init-weights"}


def _flag(name: str) -> str:
    return "--" + {"num_threads": "threads"}.get(name, name).replace("_", "-")


class _Renamed(argparse.Action):
    """Stores the value; warns when an old option name (DEPRECATED_OPTIONS) was used."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
        if option_string in DEPRECATED_OPTIONS:
            print(f"warning: {option_string} is deprecated, use {DEPRECATED_OPTIONS[option_string]}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _parser() -> argparse.ArgumentParser:
    d = FastConfig()
    p = argparse.ArgumentParser(prog="python -m raybb.train.fast", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=d.out, help="Run folder (weights, manifest.json, metrics.jsonl).")
    types = {"val_images": int, "beta": float, "steps": int, "batch": int, "patch": int, "lr": float,
             "lr_final_factor": float, "warmup_steps": int, "grad_clip": float, "seed": int, "log_every": int,
             "num_threads": int}  # fmt: skip
    for name, text in SHARED_OPTIONS.items():
        flag = _flag(name)
        kw: dict = {"dest": name, "default": getattr(d, name), "help": text, "action": _Renamed}
        if name in ("data", "val_data"):
            kw["nargs"] = "+" if name == "data" else "*"
        elif name == "precision":
            kw["choices"] = ("bf16", "fp32")
        elif name in types:
            kw["type"] = types[name]
        p.add_argument(flag, *[old for old, new in DEPRECATED_OPTIONS.items() if new == flag], **kw)
    p.add_argument("--channels", default=None, help="N,M,F,G channel counts (set over --model).")
    variants = "Likelihood scale (set over --model): 'pln' fixed unit scale, 'gamma-pln' learned."
    p.add_argument("--variant", choices=sorted(VARIANTS), default=None, help=variants)
    # options of this trainer only
    p.add_argument("--arch", default=d.arch, help="Architecture (raybb.model.arch).")
    p.add_argument("--model", default="{}", help="Architecture config fields as JSON.")
    p.add_argument("--beta-weight-power", type=float, default=d.beta_weight_power)
    p.add_argument("--minutes", type=float, default=d.minutes, help="Wall-clock budget, data loading included.")
    p.add_argument("--checkpoint-minutes", type=float, default=d.checkpoint_minutes)
    p.add_argument("--lr-warmup-steps", type=int, default=d.lr_warmup_steps)
    p.add_argument("--device", default=d.device)
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--max-images", type=int, default=d.max_images)
    p.add_argument("--max-file-mib", type=float, default=d.max_file_mib)
    p.add_argument("--val-rates", type=int, default=d.val_rates)
    p.add_argument("--peak-tflops", type=float, default=d.peak_tflops)
    return p


def config_from_args(argv: list[str] | None = None) -> FastConfig:
    """The FastConfig of a command line (old option names warn on stderr; bad values exit 2)."""
    p = _parser()
    a = vars(p.parse_args(argv))
    channels, variant = a.pop("channels"), a.pop("variant")
    try:
        model = json.loads(a["model"])
        if not isinstance(model, dict):
            raise ValueError("--model must be a JSON object")
        if channels:
            model.update(parse_channels(channels))
    except ValueError as e:
        p.error(str(e))
    if variant:
        model.update(VARIANTS[variant])
    a["model"] = model
    return FastConfig(**a)


def main(argv: list[str] | None = None) -> int:
    cfg = config_from_args(argv)

    def show(m: dict) -> None:
        print(json.dumps(m), flush=True)

    final = train(cfg, on_log=show)
    peak = final["fraction_of_peak_bf16"]
    print(
        f"done: {final['steps']} steps, {final['train_pixels_per_s'] / 1e6:.1f} M px/s"
        + (f", {peak:.1%} of {cfg.peak_tflops:.0f} TFLOP/s" if peak is not None else "")
        + f"; weights {final['files']} in {cfg.out}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
