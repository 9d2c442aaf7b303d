"""jobs/compress_bucket.py through a real head started with ``ray start --head`` + ``ray job submit``.

The head runs in its own process session on free loopback ports with its own temp dir (so it does
not become "the" cluster of this machine for other Ray users), and only it is stopped afterwards:
never ``ray stop``, which would kill every Ray process on the machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from _servers import free_port
from dist_helpers import SAMPLER, photo_crops, upload

from raybb.storage import iter_objects, resolve

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


@contextlib.contextmanager
def ray_head():
    ports = {
        n: free_port() for n in ("port", "dashboard", "client", "agent", "agent_grpc", "rt", "metrics", "om", "nm")
    }
    temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    cmd = [
        RAY,
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={ports['port']}",
        "--num-cpus=2",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={ports['dashboard']}",
        f"--ray-client-server-port={ports['client']}",
        f"--dashboard-agent-listen-port={ports['agent']}",
        f"--dashboard-agent-grpc-port={ports['agent_grpc']}",
        f"--runtime-env-agent-port={ports['rt']}",
        f"--metrics-export-port={ports['metrics']}",
        f"--object-manager-port={ports['om']}",
        f"--node-manager-port={ports['nm']}",
        "--object-store-memory=200000000",
    ]
    log = open(Path(temp_dir) / "ray-start.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{ports['dashboard']}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (Path(temp_dir) / "ray-start.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(url + "/api/version", timeout=2):
                    break
            except urllib.error.HTTPError:  # 401 under token auth: the dashboard is up
                break
            except OSError:
                pass
            assert time.monotonic() < deadline, "ray head did not come up"
            time.sleep(0.5)
        yield url, env
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        # raylet/gcs are in the head's process group: make sure none of ours is left
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_job_script_via_ray_job_submit(tmp_path, tiny_model):
    files = photo_crops(4)
    src, dst = tmp_path / "src", tmp_path / "dst"
    upload(resolve(str(src)), files)
    with ray_head() as (url, env):
        env = dict(env, RAY_AUTH_MODE="token")  # token auth is on by default in Ray 2.60
        cmd = [
            RAY,
            "job",
            "submit",
            f"--address={url}",
            "--",
            sys.executable,
            str(REPO / "jobs" / "compress_bucket.py"),
            "--src",
            str(src),
            "--dst",
            str(dst),
            "--model",
            tiny_model,
            "--sampler",
            SAMPLER,
            "--workers",
            "2",
            "--shard-size",
            "2",
            "--verify",
            "--no-progress",
        ]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert "succeeded" in (out.stdout + out.stderr).lower()
    df = pd.read_parquet(dst / "_manifest.parquet")
    assert sorted(df["key"]) == sorted(files) and df["key"].is_unique
    ok = df[df["status"] == "ok"]
    assert len(ok) >= 2 and ok["verified"].all()
    assert set(ok["bitstream_key"]) == {o.key for o in iter_objects(resolve(str(dst)), None)}
