"""The private local Ray that raybb starts: loopback only, and gone when its driver goes.

Each test runs a real driver subprocess that starts the private instance (`init_ray`), records its
processes, checks their listening sockets, then ends the driver and checks that every process it
started and its temp dir disappear within a bounded time.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import ray  # noqa: F401 - puts Ray's bundled psutil on the path

psutil = pytest.importorskip("psutil")

REPO = Path(__file__).resolve().parents[2]

DRIVER = textwrap.dedent(
    """
    import os, sys, time
    import ray  # imported before raybb, as any user script may do
    from raybb.distributed.driver import init_ray
    assert init_ray(num_cpus=1, object_store_mb=80)

    @ray.remote(num_cpus=0.5)
    class Probe:
        def pid(self):
            return os.getpid()

    p = Probe.remote()
    ray.get(p.pid.remote())
    print("TEMP", ray._private.worker._global_node.get_temp_dir_path(), flush=True)
    print("READY", flush=True)
    time.sleep(600)
    """
)


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _start_driver(tmp_path):
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(REPO))
    for k in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
        env.pop(k, None)
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        start_new_session=True, text=True,
    )  # fmt: skip
    temp_dir = None
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        if line.startswith("TEMP "):
            temp_dir = line.split(" ", 1)[1].strip()
        if line.strip() == "READY" or time.monotonic() > deadline:
            break
    assert proc.poll() is None and temp_dir, "the driver did not start its private Ray"
    time.sleep(2.0)  # the agents finish binding
    procs = psutil.Process(proc.pid).children(recursive=True)
    return proc, temp_dir, procs


def _stop_leftovers(proc, procs, temp_dir: str | None = None) -> None:
    """Only what this test started: the driver's group, the Ray processes it spawned, its temp dir."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    if temp_dir:
        shutil.rmtree(temp_dir, ignore_errors=True)


def _listening(proc, procs) -> list[tuple[str, int, str]]:
    names = {p.pid: p.name() for p in procs}
    pids = {proc.pid, *names}
    return [
        (c.laddr.ip, c.laddr.port, names.get(c.pid, "driver"))
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    ]


@pytest.mark.timeout(240)
def test_private_ray_binds_to_loopback_only(tmp_path):
    proc, temp_dir, procs = _start_driver(tmp_path)
    try:
        listening = _listening(proc, procs)
        assert any(n in ("raylet", "gcs_server") for _, _, n in listening), listening
        exposed = [x for x in listening if not _loopback(x[0])]
        assert not exposed, f"listening beyond loopback: {exposed}"
    finally:
        _stop_leftovers(proc, procs, temp_dir)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_private_ray_is_removed_with_its_driver(tmp_path, sig):
    proc, temp_dir, procs = _start_driver(tmp_path)
    try:
        assert len(procs) >= 4, procs  # gcs, raylet, agents, the actor's worker
        os.kill(proc.pid, sig)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 30
        alive = procs
        while time.monotonic() < deadline:
            alive = [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
            if not alive and not os.path.exists(temp_dir):
                break
            time.sleep(0.25)
        assert not alive, f"still running 30 s after {sig.name}: {[(p.pid, p.name()) for p in alive]}"
        assert not os.path.exists(temp_dir), f"temp dir left behind: {temp_dir}"
    finally:
        _stop_leftovers(proc, procs, temp_dir)
