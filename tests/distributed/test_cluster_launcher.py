"""`ray up` / `ray submit` / `ray down` end to end with examples/cluster.local.yaml, over real SSH.

A test-owned sshd (own config, host key and authorized key, ``ListenAddress 127.0.0.1`` on a free
port) is Ray's "remote" node; the launcher reaches that port through ``auth.ssh_proxy_command``
(Ray 2.60's SSH runner has no port field). The authorized key sets ``HOME`` to a folder of the
test, so everything the launcher puts in ``~`` (the synced checkout, the bootstrap config, the
submitted scripts) and the ``~/.bashrc`` that Ray sources (the Python environment, the S3
endpoint) stay in the test's folder. There, a ``ray`` wrapper turns ``ray stop`` (which ``ray up``
and ``ray down`` run on the head, and which would end every Ray process on the machine) into
stopping only the processes of this cluster's own ``RAY_TMPDIR``.

Checked: the compress job writes a manifest with one current row per image and bitstreams that
match it and decode; a tiny sweep trains through Ray Train/Tune on the cluster and writes its
summary to S3; ``ray down`` leaves no process of the cluster behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import yaml
from _servers import free_port, seaweedfs_server
from dist_helpers import SAMPLER, photo_crops, smooth_pngs, upload

from raybb.storage import read_bytes, read_manifest, resolve, sha256_hex

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
NEEDED = {
    "sshd": SSHD,
    "ssh": shutil.which("ssh"),
    "ssh-keygen": shutil.which("ssh-keygen"),
    "rsync": shutil.which("rsync"),
}

PROXY = textwrap.dedent(
    """
    # ProxyCommand for ssh: relays stdin/stdout to HOST:PORT (what `nc HOST PORT` does).
    import socket, sys, threading
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
    def up():
        while d := sys.stdin.buffer.read1(65536):
            s.sendall(d)
        s.shutdown(socket.SHUT_WR)
    threading.Thread(target=up, daemon=True).start()
    while d := s.recv(65536):
        sys.stdout.buffer.write(d)
        sys.stdout.buffer.flush()
    """
)

STOP_OWN = textwrap.dedent(
    """
    # `ray stop` for this test's cluster only: ends the processes whose command line names its
    # session folder under RAY_TMPDIR (gcs, raylet, monitor, workers), never another Ray here.
    import os, sys
    sys.path.insert(0, os.environ["RAYBB_TEST_DIR"])
    from stop_own_lib import stop_own
    print(f"stopped {stop_own(os.path.join(os.environ['RAY_TMPDIR'], 'ray', 'session_'))} processes of this cluster")
    """
)


def stop_own(mark: str, timeout: float = 15.0) -> int:
    """SIGTERM (then SIGKILL) every process whose command line contains ``mark``; returns how many.

    Reads /proc (Linux), so it needs nothing installed; skips itself and its parents.
    """
    me, pid = set(), os.getpid()
    while pid > 1:
        me.add(pid)
        try:
            pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break

    def matching() -> list[int]:
        found = []
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) in me:
                continue
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    cmd = f.read().decode(errors="replace")
            except OSError:
                continue
            if mark in cmd:
                found.append(int(d))
        return found

    pids = matching()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, sig)
        deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 5)
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") and _alive(p) for p in pids):
            time.sleep(0.2)
    return len(pids)


def _alive(pid: int) -> bool:
    """Running (a zombie, already dead and waiting for its parent to reap it, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _missing() -> list[str]:
    return [n for n, p in NEEDED.items() if not p or not os.path.exists(p)]


@contextlib.contextmanager
def loopback_sshd(root: Path, home: Path):
    """sshd on 127.0.0.1:<free port> accepting one generated key as root, with HOME=``home``."""
    port = free_port()
    for name in ("host", "client"):
        subprocess.run([NEEDED["ssh-keygen"], "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True)
    pub = (root / "client.pub").read_text().strip()
    (root / "authorized_keys").write_text(f'environment="HOME={home}" {pub}\n')
    (root / "sshd_config").write_text(
        textwrap.dedent(
            f"""
            Port {port}
            ListenAddress 127.0.0.1
            HostKey {root}/host
            PidFile {root}/sshd.pid
            AuthorizedKeysFile {root}/authorized_keys
            AllowUsers root
            PermitRootLogin prohibit-password
            PubkeyAuthentication yes
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            PermitUserEnvironment yes
            UsePAM no
            StrictModes no
            X11Forwarding no
            LogLevel ERROR
            """
        )
    )
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir Debian's sshd needs
    log = open(root / "sshd.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(root / "sshd_config")],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (root / "sshd.log").read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert time.monotonic() < deadline, "sshd did not start"
            time.sleep(0.2)
        yield port, root / "client"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
        log.close()


def _cluster_config(root: Path, port: int, key: Path, name: str) -> Path:
    """examples/cluster.local.yaml with what only this machine needs changed (each change asserted)."""
    cfg = yaml.safe_load((REPO / "examples" / "cluster.local.yaml").read_text())
    assert cfg["provider"] == {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}
    cfg["cluster_name"] = name
    cfg["auth"]["ssh_private_key"] = str(key)
    cfg["auth"]["ssh_proxy_command"] = f"{sys.executable} {root}/proxy.py %h {port}"
    # the shared venv must not be modified: the synced checkout is put on PYTHONPATH by ~/.bashrc
    assert any("pip install" in c and "~/raybb" in c for c in cfg["setup_commands"])
    cfg["setup_commands"] = ['python -c "import raybb, ray; print(raybb.__file__, ray.__version__)"']
    start = cfg["head_start_ray_commands"][-1]
    for flag in ("--head", "--node-ip-address=127.0.0.1", "--disable-usage-stats", "RAY_USAGE_STATS_ENABLED=0"):
        assert flag in start
    ports = " ".join(
        f"--{flag}={free_port()}"
        for flag in (
            "object-manager-port",
            "node-manager-port",
            "ray-client-server-port",
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "runtime-env-agent-port",
            "metrics-export-port",
        )
    )
    gcs = free_port()
    cfg["head_start_ray_commands"][-1] = start.replace(
        "--port=6379", f"--port={gcs} {ports} --num-cpus=2 --object-store-memory=200000000"
    )
    path = root / "cluster.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _remote_home(root: Path, home: Path, s3) -> None:
    home.mkdir()
    (home / "bin").mkdir()
    (root / "proxy.py").write_text(PROXY)
    (root / "stop_own_lib.py").write_text(
        "import contextlib, os, signal, time\n\n\n" + _source_of(stop_own) + "\n\n" + _source_of(_alive)
    )
    (home / "bin" / "stop_own.py").write_text(STOP_OWN)
    shim = home / "bin" / "ray"
    shim.write_text(
        f'#!/bin/bash\nif [ "$1" = stop ]; then exec {sys.executable} $HOME/bin/stop_own.py; fi\nexec {RAY} "$@"\n'
    )
    shim.chmod(0o755)
    env = {
        "PATH": f"$HOME/bin:{BIN}:$PATH",
        "PYTHONPATH": "$HOME/raybb",
        "RAY_TMPDIR": str(root),
        "RAYBB_TEST_DIR": str(root),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "AWS_ACCESS_KEY_ID": s3.key,
        "AWS_SECRET_ACCESS_KEY": s3.secret,
        "AWS_ENDPOINT_URL": s3.url,
        "OMP_NUM_THREADS": "1",
    }
    (home / ".bashrc").write_text("".join(f'export {k}="{v}"\n' for k, v in env.items()))


def _source_of(fn) -> str:
    import inspect

    return inspect.getsource(fn)


def _ray(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    out = subprocess.run([RAY, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"ray {' '.join(args[:2])} failed:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    return out


@pytest.mark.skipif(bool(_missing()), reason=f"needs {', '.join(_missing())} (Debian: openssh-server rsync)")
def test_ray_up_submit_down_on_loopback(tmp_path, tiny_model):
    from raybb.codec import load_codec

    files = photo_crops(6)
    root = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))  # short: Ray's socket paths live under it
    home = root / "home"
    name = f"raybb-t{uuid.uuid4().hex[:6]}"
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        s3 = stack.enter_context(seaweedfs_server(tmp_path / "s3"))
        port, key = stack.enter_context(loopback_sshd(root, home))
        _remote_home(root, home, s3)
        cfg = _cluster_config(root, port, key, name)
        opts = s3.storage_options
        bucket = f"s3://raybb-up-{uuid.uuid4().hex[:6]}"
        upload(resolve(f"{bucket}/photos", opts), files)
        upload(resolve(f"{bucket}/train", opts), smooth_pngs(4, 160))
        upload(resolve(f"{bucket}/val", opts), smooth_pngs(2, 176))
        env = dict(os.environ, RAY_TMPDIR=str(root / "launcher"), RAY_USAGE_STATS_ENABLED="0")
        (root / "launcher").mkdir()
        t0 = time.monotonic()
        try:
            up = _ray(["up", "-y", "--no-config-cache", str(cfg)], env, 300)
            assert "raybb" in up.stdout + up.stderr  # the setup check printed the synced package
            assert (home / "raybb" / "jobs" / "compress_bucket.py").exists()  # file_mounts synced the checkout
            sub = _ray(
                [
                    "submit", "--no-config-cache", str(cfg), "jobs/compress_bucket.py", "--",
                    "--src", f"{bucket}/photos/", "--dst", f"{bucket}/archive/", "--model", tiny_model,
                    "--sampler", SAMPLER, "--workers", "2", "--shard-size", "2", "--verify", "--no-progress",
                ],
                env, 300,
            )  # fmt: skip
            start = sub.stdout.rindex("\n{\n") + 1  # the job prints its summary as indented JSON last
            summary = json.loads(sub.stdout[start : sub.stdout.rindex("}") + 1])
            assert summary["total"] == len(files) and summary["processed"] == len(files)
            assert summary["ok"] + summary["errors"] == len(files) and summary["ok"] >= len(files) // 2
            assert summary["num_workers"] == 2 and summary["use_gpu"] is False

            df = read_manifest(f"{bucket}/archive/_manifest.parquet", storage_options=opts).to_pandas()
            assert sorted(df["key"]) == sorted(files) and df["key"].is_unique
            assert df["run_id"].nunique() == 1 and df["node_id"].notna().all()
            ok = df[df["status"] == "ok"]
            assert ok["verified"].all()
            dst = resolve(f"{bucket}/archive", opts)
            codec = load_codec(tiny_model)
            for row in ok.itertuples():
                data = read_bytes(dst, row.bitstream_key)
                assert sha256_hex(data) == row.bitstream_sha256 and len(data) == row.bitstream_bytes
                assert codec.decompress(data).shape == (row.height, row.width, 3)

            _ray(
                [
                    "submit", "--no-config-cache", str(cfg), "jobs/train_sweep.py", "--",
                    "--beta", "3.0", "--variant", "pln", "--name", "sw", "--storage", f"{bucket}/sweeps",
                    "--endpoint-url", s3.url, "--workers", "1", "--cpus-per-worker", "0.5", "--max-concurrent", "1",
                    "--data", f"{bucket}/train", "--exclude", "--val-data", f"{bucket}/val", "--val-images", "2",
                    "--steps", "4", "--batch", "2", "--patch", "64", "--lr", "1e-3", "--warmup-steps", "2",
                    "--log-every", "2", "--val-every", "0", "--checkpoint-every", "2", "--channels", "16,16,16,4",
                ],
                env, 400,
            )  # fmt: skip
            summary_csv = read_bytes(resolve(f"{bucket}/sweeps/sw", opts), "summary.csv").decode()
            assert len(summary_csv.strip().splitlines()) == 2 and "pln" in summary_csv
        finally:
            down = subprocess.run(
                [RAY, "down", "-y", str(cfg)], cwd=REPO, env=env, capture_output=True, text=True,
                timeout=120,
            )  # fmt: skip
            left = stop_own(f"{root}/ray/session_")  # whatever `ray down` did not end (nothing, when it works)
            print(f"ray up/submit/down: {time.monotonic() - t0:.0f}s")
        assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
        assert left == 0, "ray down left processes of the cluster running"
