"""The training loop on a tiny model and real photos: the loss goes down, checkpoints resume exactly.

A checkpoint must restore weights, Adam moments, the step counter and the patch sampler, so that a
resumed run continues the *same* optimisation (the long background training depends on it). The
global torch RNG (reparametrisation noise) is not part of a checkpoint, so tests seed it explicitly
before comparing.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from raybb.errors import WeightsError
from raybb.model.weights import load_weights
from raybb.train.data import PatchSampler, dataset_fingerprint, list_images
from raybb.train.loop import TrainingLoop, evaluate_images, train_to_directory


def _fixed_batch_loss(loop: TrainingLoop, xb: torch.Tensor) -> float:
    """The training objective on a fixed batch with fixed noise: comparable across steps."""
    with torch.no_grad():
        torch.manual_seed(123)
        out = loop.net(xb)
        pixels = xb.shape[-1] * xb.shape[-2]
        return ((out.nll + loop.cfg.beta * (out.kl1 + out.kl2)) / pixels).mean().item()


def test_loss_decreases_on_tiny_run(tiny_cfg) -> None:
    loop = TrainingLoop(tiny_cfg(steps=40))
    held_out = PatchSampler(loop.sampler.images, 64, seed=99).sample(16)
    before = _fixed_batch_loss(loop, held_out)
    losses = []
    for _ in range(40):
        m = loop.train_step()
        assert all(math.isfinite(v) for v in m.values()), m
        losses.append(m["loss"])
    after = _fixed_batch_loss(loop, held_out)
    early, late = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert late < 0.8 * early, (early, late)
    assert after < 0.85 * before, (before, after)
    assert loop.step == 40
    assert m["bpp"] >= m["bpp_level2"] >= 0
    assert m["gamma"] > 0


def test_schedules(tiny_cfg) -> None:
    loop = TrainingLoop(tiny_cfg(beta=2.0, warmup_steps=10, steps=100, lr=1e-3, lr_final_factor=0.1))
    assert loop.beta_at(0) == pytest.approx(0.2)
    assert loop.beta_at(4) == pytest.approx(1.0)
    assert loop.beta_at(9) == loop.beta_at(500) == 2.0
    assert loop.lr_at(0) == pytest.approx(1e-3)
    assert loop.lr_at(50) == pytest.approx(1e-3 * 0.1**0.5)
    assert loop.lr_at(100) == pytest.approx(1e-4)
    m = loop.train_step()
    assert m["beta"] == pytest.approx(0.2) and m["lr"] == pytest.approx(1e-3)
    assert loop.opt.param_groups[0]["lr"] == pytest.approx(1e-3)


def _opt_snapshot(loop: TrainingLoop) -> list[dict[str, torch.Tensor]]:
    return [
        {k: (v.clone() if torch.is_tensor(v) else v) for k, v in loop.opt.state[p].items()}
        for p in loop.net.parameters()
        if p in loop.opt.state
    ]


def _next_losses(loop: TrainingLoop, n: int, seed: int = 2024) -> list[float]:
    torch.manual_seed(seed)
    return [loop.train_step()["loss"] for _ in range(n)]


def test_checkpoint_resume_is_exact(tiny_cfg, tmp_path: Path) -> None:
    cfg = tiny_cfg(steps=100)
    a = TrainingLoop(cfg)
    for _ in range(5):
        a.train_step()
    ck = a.save_checkpoint(tmp_path / "ck")
    assert {p.name for p in ck.iterdir()} == {"model.safetensors", "optimizer.safetensors", "state.json"}
    weights = {k: v.clone() for k, v in a.net.state_dict().items()}
    opt_state = _opt_snapshot(a)
    sampler_state = a.sampler.gen.get_state().clone()
    expected = _next_losses(a, 3)

    b = TrainingLoop(cfg)
    _next_losses(b, 1, seed=7)  # b has its own history: all of it must be overwritten by the load
    b.load_checkpoint(ck)
    assert b.step == 5
    for k, v in b.net.state_dict().items():
        assert torch.equal(v, weights[k]), k
    assert all(p.requires_grad for p in b.net.parameters() if p is not b.net.likelihood.raw_gamma)
    got_opt = _opt_snapshot(b)
    assert len(got_opt) == len(opt_state) == len(list(a.net.parameters()))
    for s_exp, s_got in zip(opt_state, got_opt, strict=True):
        assert float(s_got["step"]) == float(s_exp["step"]) == 5.0
        assert torch.equal(s_got["exp_avg"], s_exp["exp_avg"])
        assert torch.equal(s_got["exp_avg_sq"], s_exp["exp_avg_sq"])
    assert torch.equal(b.sampler.gen.get_state(), sampler_state)
    assert _next_losses(b, 3) == expected  # bit-identical continuation
    assert b.step == 8

    # control: the same weights without the Adam moments diverge at the second step, so the
    # equality above really depends on the optimizer state being restored
    (ck / "optimizer.safetensors").unlink()
    c = TrainingLoop(cfg)
    c.load_checkpoint(ck)
    got = _next_losses(c, 3)
    assert got[0] == expected[0]
    assert got[1:] != expected[1:]


def test_checkpoint_model_is_a_valid_weights_file(tiny_cfg, tmp_path: Path, photo_dir: Path) -> None:
    loop = TrainingLoop(tiny_cfg(beta=3.0))
    loop.train_step()
    ck = loop.save_checkpoint(tmp_path / "ck")
    loaded = load_weights(ck / "model.safetensors")
    assert loaded.config == loop.net.config
    meta = loaded.meta
    assert meta["beta"] == 3.0 and meta["steps"] == 1 and meta["variant"] == "gamma-pln"
    assert meta["dataset_files"] == 4
    assert meta["dataset_fingerprint"] == dataset_fingerprint(list_images(str(photo_dir)))
    state = json.loads((ck / "state.json").read_text())
    assert state["step"] == 1 and state["train_config"]["beta"] == 3.0


def test_checkpoint_with_other_architecture_rejected(tiny_cfg, tmp_path: Path) -> None:
    a = TrainingLoop(tiny_cfg())
    ck = a.save_checkpoint(tmp_path / "ck")
    b = TrainingLoop(tiny_cfg(model={"N": 8, "M": 8, "F": 8, "G": 2}))
    with pytest.raises(ValueError, match="architecture"):
        b.load_checkpoint(ck)
    raw = bytearray((ck / "model.safetensors").read_bytes())
    raw[-3] ^= 0xFF
    (ck / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(WeightsError):
        a.load_checkpoint(ck)


def test_train_to_directory_resumes(tiny_cfg, tmp_path: Path) -> None:
    out = tmp_path / "run"
    logs: list[dict] = []
    last = train_to_directory(tiny_cfg(steps=6, checkpoint_every=3, log_every=3), out, on_log=logs.append)
    assert last["step"] == 6 and [m["step"] for m in logs] == [3, 6]
    assert (out / "checkpoint" / "model.safetensors").exists()
    assert not (out / "checkpoint.tmp").exists() and not (out / "checkpoint.old").exists()
    assert json.loads((out / "config.json").read_text())["steps"] == 6
    w6 = load_weights(out / "checkpoint" / "model.safetensors")
    assert w6.meta["steps"] == 6

    # a longer target resumes from step 6 (not from scratch) and appends to the metrics log
    last = train_to_directory(tiny_cfg(steps=9, checkpoint_every=3, log_every=3), out)
    assert last["step"] == 9
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [3, 6, 9]
    w9 = load_weights(out / "checkpoint" / "model.safetensors")
    assert w9.meta["steps"] == 9 and w9.fingerprint != w6.fingerprint


def test_run_callbacks_and_validation(tiny_cfg, photo_dir: Path) -> None:
    cfg = tiny_cfg(steps=4, log_every=2, val_every=4, checkpoint_every=2, val_data=[str(photo_dir)], val_images=1)
    loop = TrainingLoop(cfg)
    assert len(loop.val_set) == 1
    logs, cks = [], []
    last = loop.run(on_log=logs.append, on_checkpoint=lambda s, m: cks.append(s))
    assert [m["step"] for m in logs] == [2, 4]
    assert cks == [2, 4]
    assert "val_psnr_sample" not in logs[0]
    for k in ("val_bpp", "val_bpp_level2", "val_psnr_sample", "val_psnr_mean"):
        assert math.isfinite(last[k]), k
    assert last["val_bpp"] >= last["val_bpp_level2"] > 0
    stopped = TrainingLoop(tiny_cfg(steps=50))
    stopped.run(should_stop=lambda: True)
    assert stopped.step == 1


def test_evaluate_images_odd_sizes(tiny_cfg) -> None:
    loop = TrainingLoop(tiny_cfg())
    imgs = [
        torch.randint(0, 256, (3, 37, 53), dtype=torch.uint8),
        torch.randint(0, 256, (3, 64, 70), dtype=torch.uint8),
    ]
    r1 = evaluate_images(loop.net, imgs, seed=3)
    assert r1 == evaluate_images(loop.net, imgs, seed=3)  # seeded: reruns agree
    other = evaluate_images(loop.net, imgs, seed=4)
    assert other["val_psnr_mean"] == r1["val_psnr_mean"] and other["val_psnr_sample"] != r1["val_psnr_sample"]
    assert r1["val_bpp"] > r1["val_bpp_level2"] > 0 and r1["val_images"] == 2
    for mode in ("sample", "mean"):
        assert 0 < r1[f"val_psnr_{mode}"] < 60 and 0 < r1[f"val_ms_ssim_{mode}"] <= 1
    assert loop.net.training  # evaluation leaves the model's mode as it found it


# -- plain PLN (fixed scale) when resuming / fine-tuning ------------------------------------------


def _grad_flags(loop: TrainingLoop) -> dict[str, bool]:
    return {k: p.requires_grad for k, p in loop.net.named_parameters()}


@pytest.mark.parametrize("learn_scale", [False, True])
def test_resume_and_finetune_keep_fresh_requires_grad(tiny_cfg, tmp_path: Path, learn_scale: bool) -> None:
    """load_weights returns a frozen inference model; training from it must unfreeze exactly what a
    fresh model trains (the plain PLN's fixed scale stays frozen)."""
    model = {"N": 8, "M": 8, "F": 8, "G": 2, "learn_scale": learn_scale}
    fresh = TrainingLoop(tiny_cfg(model=model))
    want = _grad_flags(fresh)
    assert want["likelihood.raw_gamma"] is learn_scale
    assert all(v for k, v in want.items() if k != "likelihood.raw_gamma")
    ck = fresh.save_checkpoint(tmp_path / "ck")
    resumed = TrainingLoop(tiny_cfg(model=model))
    resumed.load_checkpoint(ck)
    assert _grad_flags(resumed) == want
    tuned = TrainingLoop(tiny_cfg(model=model), init_weights=str(ck / "model.safetensors"))
    assert _grad_flags(tuned) == want
    assert tuned.net.training


def test_fine_tuning_records_lineage_and_resume_keeps_it(tiny_cfg, tmp_path: Path) -> None:
    """A run initialised from weights writes where it came from into every checkpoint's meta
    (name, fingerprint, beta, steps, and that model's own lineage), and keeps it across resume."""
    model = {"N": 8, "M": 8, "F": 8, "G": 2, "learn_scale": False}
    parent = TrainingLoop(tiny_cfg(model=model))
    assert parent.model_meta()["fine_tuned_from"] is None
    pck = parent.save_checkpoint(tmp_path / "parent")
    parent_w = load_weights(pck / "model.safetensors")
    tuned = TrainingLoop(tiny_cfg(model=model, beta=0.5), init_weights=str(pck / "model.safetensors"))
    want = {"name": "model", "fingerprint": parent_w.fingerprint, "beta": parent_w.meta["beta"],
            "steps": parent_w.meta["steps"], "fine_tuned_from": None}  # fmt: skip
    assert tuned.model_meta()["fine_tuned_from"] == want
    ck = tuned.save_checkpoint(tmp_path / "tuned")
    assert load_weights(ck / "model.safetensors").meta["fine_tuned_from"] == want
    resumed = TrainingLoop(tiny_cfg(model=model, beta=0.5))  # resume: no init_weights given
    resumed.load_checkpoint(ck)
    assert resumed.model_meta()["fine_tuned_from"] == want
    # a second fine-tuning nests the chain
    again = TrainingLoop(tiny_cfg(model=model), init_weights=str(ck / "model.safetensors"))
    assert again.model_meta()["fine_tuned_from"]["fine_tuned_from"] == want


_DDP_SCRIPT = r"""
import os, sys, torch, torch.distributed as dist, torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP
from raybb.train.loop import TrainConfig, TrainingLoop

def worker(rank, cfg_json, weights, port):
    import json
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    cfg = TrainConfig.from_dict(json.loads(cfg_json))
    loop = TrainingLoop(cfg, shard=(rank, 2), wrap_model=DDP, init_weights=weights)
    for _ in range(3):
        loop.train_step()
    dist.destroy_process_group()

if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1], sys.argv[2], int(sys.argv[3])), nprocs=2)
    print("DDP-OK")
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # ~20 s on the shared 2-core machine (two spawned workers)
def test_plain_pln_finetune_under_ddp(tiny_cfg, tmp_path: Path) -> None:
    """Two gloo workers fine-tune a plain PLN from a weights file (the beta-sweep's init_weights).
    With the fixed scale wrongly unfrozen, DDP fails at the second step ("Expected to have finished
    reduction in the prior iteration")."""
    import subprocess
    import sys

    model = {"N": 8, "M": 8, "F": 8, "G": 2, "learn_scale": False}
    cfg = tiny_cfg(model=model, batch=1, num_threads=1)
    ck = TrainingLoop(cfg).save_checkpoint(tmp_path / "ck")
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    # RAYBB_TEST_REPO: run the workers against another checkout (to show the old code fails)
    repo = os.environ.get("RAYBB_TEST_REPO") or Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    r = subprocess.run(
        [sys.executable, str(script), json.dumps(cfg.to_dict()), str(ck / "model.safetensors"), str(_free_port())],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 0 and "DDP-OK" in r.stdout, r.stderr[-3000:]


# -- a kill in the middle of a checkpoint save ------------------------------------------------------


def _steps_logged(out: Path) -> list[int]:
    return [json.loads(s)["step"] for s in (out / "metrics.jsonl").read_text().splitlines()]


def test_kill_between_renames_resumes_from_old(tiny_cfg, tmp_path: Path) -> None:
    """Killed after checkpoint -> checkpoint.old but before .tmp -> checkpoint: only .old is left.
    It is the latest checkpoint; the run must continue from it, not restart from step 0 (and then
    delete it at the next save)."""
    import shutil

    out = tmp_path / "run"
    train_to_directory(tiny_cfg(steps=4, checkpoint_every=2, log_every=2), out)
    (out / "checkpoint").replace(out / "checkpoint.old")
    shutil.copytree(out / "checkpoint.old", out / "checkpoint.tmp")  # a half-written next save
    train_to_directory(tiny_cfg(steps=6, checkpoint_every=2, log_every=2), out)
    assert _steps_logged(out) == [2, 4, 6]
    assert load_weights(out / "checkpoint" / "model.safetensors").meta["steps"] == 6
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint", "config.json", "metrics.jsonl"]


def test_kill_before_cleanup_does_not_break_later_saves(tiny_cfg, tmp_path: Path) -> None:
    """Killed after .tmp -> checkpoint but before removing checkpoint.old: both exist. Renaming the
    checkpoint onto the stale, non-empty .old used to fail at every later save."""
    import shutil

    out = tmp_path / "run"
    train_to_directory(tiny_cfg(steps=4, checkpoint_every=2, log_every=2), out)
    shutil.copytree(out / "checkpoint", out / "checkpoint.old")
    train_to_directory(tiny_cfg(steps=6, checkpoint_every=2, log_every=2), out)
    assert _steps_logged(out) == [2, 4, 6]
    assert load_weights(out / "checkpoint" / "model.safetensors").meta["steps"] == 6
    assert not (out / "checkpoint.old").exists()


def test_bf16_mixed_precision_trains_and_keeps_float32(tiny_cfg, tmp_path: Path, photo_dir: Path) -> None:
    """precision='bf16': convolutions under autocast, but the loss still falls, the latent
    Gaussians, checkpoints and validation stay float32 (the codec never sees bfloat16)."""
    cfg = tiny_cfg(steps=40, precision="bf16", val_data=[str(photo_dir)], val_images=1)
    loop = TrainingLoop(cfg)
    assert loop.net.compute_dtype == torch.bfloat16
    held_out = PatchSampler(loop.sampler.images, 64, seed=99).sample(16)
    before = _fixed_batch_loss(loop, held_out)
    out = loop.net(held_out[:2])
    assert out.q1.mean.dtype == out.q2.std.dtype == out.x_hat.dtype == torch.float32
    losses = [loop.train_step()["loss"] for _ in range(40)]
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-10:]) < 0.8 * sum(losses[:10]), losses
    assert _fixed_batch_loss(loop, held_out) < 0.85 * before
    # validation measures the float32 model, then training precision is restored
    val = loop.validate()
    assert math.isfinite(val["val_psnr_sample"]) and loop.net.compute_dtype == torch.bfloat16
    loop.save_checkpoint(tmp_path / "ck")
    w = load_weights(tmp_path / "ck" / "model.safetensors")
    assert w.model.compute_dtype is None
    assert all(t.dtype == torch.float32 for t in w.model.state_dict().values())
    assert w.meta["train_config"]["precision"] == "bf16"
    # resuming a bf16 run restores weights and Adam moments in the training layout
    again = TrainingLoop(cfg)
    again.load_checkpoint(tmp_path / "ck")
    assert again.step == loop.step
    for p_old, p_new in zip(loop.net.parameters(), again.net.parameters(), strict=True):
        assert torch.equal(p_old, p_new)
        assert torch.equal(loop.opt.state[p_old]["exp_avg"], again.opt.state[p_new]["exp_avg"])
    assert math.isfinite(again.train_step()["loss"])


def test_unknown_precision_rejected(tiny_cfg) -> None:
    with pytest.raises(ValueError, match="precision"):
        tiny_cfg(precision="fp8")


def test_fine_tuning_a_different_architecture_records_it_and_resumes(tiny_cfg, tmp_path: Path) -> None:
    """The init weights fix the architecture, whatever cfg.model says (e.g. a widened model): the
    run's config.json and checkpoints record the real one, and resuming with the same cfg works."""
    from raybb.model.widen import widen_weights_file

    parent = TrainingLoop(tiny_cfg(model={"N": 8, "M": 8, "F": 8, "G": 2}))
    pck = parent.save_checkpoint(tmp_path / "parent")
    wide = tmp_path / "wide.safetensors"
    widen_weights_file(pck / "model.safetensors", wide, 12)
    cfg = tiny_cfg(model={"N": 16, "M": 16, "F": 16, "G": 4}, steps=2, checkpoint_every=2, log_every=2)
    out = tmp_path / "run"
    train_to_directory(cfg, out, init_weights=str(wide))
    assert json.loads((out / "config.json").read_text())["model"]["N"] == 12
    w2 = load_weights(out / "checkpoint" / "model.safetensors")
    assert w2.config.N == 12 and w2.meta["train_config"]["model"]["N"] == 12
    assert w2.meta["fine_tuned_from"]["name"] == "wide"
    # resume (same cfg, still saying N=16): built from the checkpoint, not from cfg.model
    last = train_to_directory(tiny_cfg(model=cfg.model, steps=4, checkpoint_every=2, log_every=2), out)
    assert last["step"] == 4
    w4 = load_weights(out / "checkpoint" / "model.safetensors")
    assert w4.config.N == 12 and w4.meta["steps"] == 4
    assert w4.meta["fine_tuned_from"] == w2.meta["fine_tuned_from"]
