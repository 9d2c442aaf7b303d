"""A 2-β × 2-worker sweep on a real local Ray: killed mid-run, resumed, summarised, registered.

The first run is a separate driver process (``sweep_main``, what ``raybb sweep`` and
``jobs/train_sweep.py`` call) with a Ray instance of its own; driver and instance are SIGKILLed
once a checkpoint exists, which is what a lost head node looks like. The second run, in this
process on this module's Ray instance, must restore the Tune experiment from the storage path and
continue each trial from its checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny_config

from raybb import registry
from raybb.distributed.train import run_sweep
from raybb.model.weights import load_weights

pytestmark = pytest.mark.timeout(int(os.environ.get("RAYBB_SWEEP_TEST_TIMEOUT", "420")))

BETAS = [3.0, 0.3]
STEPS = 16
CKPT_EVERY = 4


def _cli_args(data: dict, storage: Path) -> list[str]:
    return [
        "--beta", *map(str, BETAS), "--variant", "gamma-pln", "--name", "sw",
        "--storage", str(storage), "--workers", "2", "--cpus-per-worker", "0.5", "--max-concurrent", "2",
        "--data", data["train"], "--exclude", "--val-data", data["val"], "--val-images", "2",
        "--steps", str(STEPS), "--batch", "2", "--patch", "64", "--lr", "1e-3", "--warmup-steps", "4",
        "--log-every", "2", "--val-every", "0", "--checkpoint-every", str(CKPT_EVERY),
        "--channels", "16,16,16,4",
    ]  # fmt: skip


def _committed_step(run_dir: Path) -> int:
    """Step of the latest checkpoint Ray Train has committed (its manager snapshot), 0 if none.

    A re-run restores from exactly this checkpoint; a checkpoint folder whose upload finished
    but which the snapshot does not list yet is not a restore point.
    """
    try:
        snap = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
        return int(snap["latest_checkpoint_result"]["metrics"]["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _kill_cluster(proc: subprocess.Popen, temp_dir: Path) -> None:
    """SIGKILL the driver and the whole Ray instance it started (same process group), then make
    sure no process of that instance survives (a head node that is simply gone)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError, ValueError):
                if str(temp_dir).encode() in cmdline.read_bytes():
                    pid = int(cmdline.parent.name)
                    os.kill(pid, signal.SIGKILL)
                    left.append(pid)
        if not left:
            return
        time.sleep(0.5)
    raise AssertionError(f"processes of the killed Ray instance survive: {left}")


def test_sweep_killed_then_resumed_and_registered(ray_local, tiny_data, tmp_path, monkeypatch):
    storage = tmp_path / "sweeps"
    runs = storage / "sw" / "runs"
    # The interrupted run has a Ray instance of its own, started by the driver process: killing the
    # process group takes the whole "head node" down, and the resumed run in this process works
    # from the storage path alone on another cluster (this module's), with nothing of the dead
    # one left holding CPUs or placement groups.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(Path.cwd()))
    dead_tmp = Path(tempfile.mkdtemp(prefix="rk", dir="/tmp"))
    code = (
        "import sys, ray; ray.init(num_cpus=2, object_store_memory=150 * 2**20, include_dashboard=False, "
        f"_node_ip_address='127.0.0.1', _temp_dir={str(dead_tmp)!r}, configure_logging=False); "
        "from raybb.distributed.train import sweep_main; sys.exit(sweep_main(sys.argv[1:]))"
    )
    log = (tmp_path / "driver.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *_cli_args(tiny_data, storage)],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if any(_committed_step(d) for d in runs.glob("gamma-pln-beta*")):
                break
            time.sleep(0.5)
        assert proc.poll() is None, f"driver exited early: {(tmp_path / 'driver.log').read_text()[-3000:]}"
    finally:
        _kill_cluster(proc, dead_tmp)
        log.close()
        shutil.rmtree(dead_tmp, ignore_errors=True)
    at_kill = {d.name: _committed_step(d) for d in runs.glob("gamma-pln-beta*")}
    assert any(at_kill.values()), at_kill
    assert not (storage / "sw" / "summary.csv").exists()  # it really was interrupted

    reg = tmp_path / "registry"
    cfg = tiny_config(tiny_data, steps=STEPS, checkpoint_every=CKPT_EVERY)
    res = run_sweep(
        BETAS, ("gamma-pln",), cfg, num_workers_per_trial=2, resources_per_worker={"CPU": 0.5},
        storage_path=str(storage), name="sw", max_concurrent=2, registry_dir=str(reg),
    )  # fmt: skip
    t = res.table
    assert res.restored and res.ok, t.to_string()
    assert sorted(t["beta"]) == sorted(BETAS) and (t["steps"] == STEPS).all()
    for _, row in t.iterrows():
        seen = at_kill.get(f"gamma-pln-beta{row['beta']:g}", 0)
        if 0 < seen < STEPS:  # was mid-training: continues from its checkpoint, not from step 0
            assert row["resumed_from_step"] == seen, (row, at_kill)
    assert (t["resumed_from_step"] > 0).any()
    for col in ("val_bpp", "val_psnr_sample", "val_psnr_mean", "val_ms_ssim_mean"):
        assert t[col].notna().all() and (t[col] > 0).all(), col

    # summary files agree with the returned table
    csv = pd.read_csv(storage / "sw" / "summary.csv")
    assert list(csv["registered_as"]) == list(t["registered_as"])
    assert "| variant | beta |" in (storage / "sw" / "summary.md").read_text()

    # registered as gamma-pln-q1 (lowest rate) and -q2, loadable, same models as the exported files
    assert [i.name for i in res.registered] == ["gamma-pln-q1", "gamma-pln-q2"]
    by_q = t.set_index("registered_as")
    assert by_q.loc["gamma-pln-q1", "val_bpp"] <= by_q.loc["gamma-pln-q2", "val_bpp"]
    for info in res.registered:
        loaded = load_weights(info.path)
        assert loaded.fingerprint == info.fingerprint == by_q.loc[info.name, "fingerprint"]
        assert loaded.meta["validation"]["val_bpp"] == pytest.approx(by_q.loc[info.name, "val_bpp"])
        assert loaded.meta["steps"] == STEPS and loaded.meta["beta"] in BETAS
        exported = load_weights(storage / "sw" / "models" / f"gamma-pln-beta{loaded.meta['beta']:g}.safetensors")
        assert exported.fingerprint == loaded.fingerprint
    monkeypatch.setattr(registry, "SHIPPED_DIR", tmp_path / "no-shipped")
    monkeypatch.setenv(registry.MODELS_DIR_ENV, str(reg))
    assert registry.resolve_model("gamma-pln-q2") == reg / "gamma-pln-q2.safetensors"
    assert registry.find_by_fingerprint(res.registered[0].short_fingerprint) == res.registered[0].path

    # the same sweep again: restored, nothing retrained, same registrations (idempotent)
    again = run_sweep(
        BETAS, ("gamma-pln",), cfg, num_workers_per_trial=2, resources_per_worker={"CPU": 0.5},
        storage_path=str(storage), name="sw", max_concurrent=2, registry_dir=str(reg),
    )  # fmt: skip
    assert again.restored and again.ok
    assert sorted(again.table["fingerprint"]) == sorted(t["fingerprint"])


def test_sweep_name_reuse_with_other_betas_is_refused(tiny_data, tmp_path):
    d = tmp_path / "s" / "sw"
    d.mkdir(parents=True)
    (d / "sweep.json").write_text(json.dumps({"betas": [0.3, 3.0], "variants": ["gamma-pln"], "num_workers": 2}))
    with pytest.raises(ValueError, match="use another name"):
        run_sweep([1.0], ("gamma-pln",), tiny_config(tiny_data), storage_path=str(tmp_path / "s"), name="sw")
    with pytest.raises(ValueError, match="unknown variants"):
        run_sweep([1.0], ("vae",), tiny_config(tiny_data), storage_path=str(tmp_path / "s"), name="x")
    with pytest.raises(ValueError, match="distinct positive"):
        run_sweep([1.0, 1.0], storage_path=str(tmp_path / "s"), name="y")
