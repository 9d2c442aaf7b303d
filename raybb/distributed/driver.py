"""The batch driver: list -> shard plan -> bounded in-flight actors -> retries -> Parquet manifest.

::

    source prefix ──iter_objects (streamed, sorted)──> skip keys already done (resume)
        └─> plan_shards (count/bytes) ──> up to `max_in_flight` shards on ready actors (ray.wait)
              ├─ rows  ──> ManifestWriter (files flushed every N rows) ──> Parquet dataset + _SUCCESS
              └─ actor/node died, or shard raised ──> shard requeued (attempt+1, fresh actor)
                                                       after `max_attempts` -> error rows

Memory on the driver does not grow with the number of images: the listing is a generator, at
most ``max_in_flight`` shards (keys only) are alive, and manifest rows are flushed to files of the
manifest dataset, never merged. Only resume keeps the already-done keys, as 16-byte digests
(built by streaming the previous manifest and the destination listing).

Resume (``resume=True``, the default): keys whose manifest row is ``ok``/``skipped`` *and* whose
output still exists are not sent to any actor; their rows are carried over unchanged. Outputs that
exist without a manifest row (the driver died before flushing) are checked by the actor (decoded
against the source) and recorded as ``skipped``: nothing is recompressed, nothing is lost.

The settings are one :class:`~raybb.distributed.config.CompressJobConfig` (or
``DecompressJobConfig``); the scheduling state of a job lives in one :class:`_JobRunner`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import pyarrow as pa
import ray

from raybb.distributed.actor import BITSTREAM_SUFFIX, CompressorActor
from raybb.distributed.config import (
    BucketJobConfig,
    CompressJobConfig,
    DecompressJobConfig,
    UseGpu,
    config_from,
)
from raybb.distributed.partition import (
    BITSTREAM_MIN_BPP,
    SOURCE_MIN_BPP,
    Shard,
    estimate_pixels,
    plan_shards,
)
from raybb.errors import RaybbError, StorageError
from raybb.storage import (
    COMPRESS_SCHEMA,
    DECOMPRESS_SCHEMA,
    IMAGE_SUFFIXES,
    STATUS_ERROR,
    STATUS_OK,
    STATUS_SKIPPED,
    CompressRow,
    DecompressRow,
    KeySet,
    Location,
    ManifestWriter,
    ObjectInfo,
    done_keys,
    iter_objects,
    manifest_location,
    new_run_id,
    resolve,
)

__all__ = [
    "compress_bucket",
    "decompress_bucket",
    "CompressJobConfig",
    "DecompressJobConfig",
    "JobSummary",
    "JobProgress",
    "init_ray",
    "JobError",
]


class JobError(RaybbError):
    """The job as a whole cannot go on (no actor could be started, bad arguments...)."""


@dataclass(frozen=True)
class JobProgress:
    """What a progress callback receives after each shard (and about once a second)."""

    done: int  # images finished in this run (ok + error + skipped)
    total: int  # images this run has to do (resumed ones excluded)
    ok: int
    errors: int
    skipped: int
    already_done: int  # images carried over from an earlier run
    elapsed_s: float
    images_per_s: float
    eta_s: float | None
    workers: int  # actors ready right now


@dataclass
class JobSummary:
    """Result of a compress/decompress job (no credentials, only URLs given by the caller)."""

    kind: str
    run_id: str
    src: str
    dst: str
    manifest: str
    total: int = 0  # source objects listed
    already_done: int = 0  # carried over from earlier runs (not sent to actors)
    processed: int = 0  # images handled in this run
    ok: int = 0
    errors: int = 0
    skipped: int = 0
    shards: int = 0
    shard_retries: int = 0
    actors_started: int = 0
    actors_lost: int = 0
    num_workers: int = 0
    use_gpu: bool = False
    seconds: float = 0.0
    megapixels: float = 0.0  # pixels of ok images in this run / 1e6
    bytes_in: int = 0
    bytes_out: int = 0
    error_samples: list[str] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    @property
    def mp_per_s(self) -> float:
        return self.megapixels / self.seconds if self.seconds > 0 else 0.0


# --------------------------------------------------------------------------------------------
# Ray setup
# --------------------------------------------------------------------------------------------
def _live_local_cluster(address_file: str | None = None) -> bool:
    """Whether ``$RAY_TMPDIR/ray/ray_current_cluster`` (default /tmp/ray/...) names a live GCS.

    ``ray start`` (and ``ray.cluster_utils``) write that file, where ``ray.init("auto")`` also
    looks; a crashed cluster leaves it behind, and connecting to a dead address hangs for minutes,
    so it is checked with a 1 s TCP connect.
    """
    if address_file is None:
        from ray._common.utils import get_ray_address_file

        address_file = get_ray_address_file(None)
    try:
        with open(address_file) as f:
            addr = f.read().strip()
        host, _, port = addr.rpartition(":")
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except (OSError, ValueError):
        return False


def init_ray(address: str | None = None, *, num_cpus: int | None = None, object_store_mb: int = 512) -> bool:
    """Connect to Ray, or start a private local instance; returns True if this call did either.

    Already initialised: nothing. ``address`` given, ``RAY_ADDRESS`` set, or a live cluster started
    with ``ray start`` on this machine: connect. Otherwise a private local instance bound to
    127.0.0.1 only, with usage statistics off, no dashboard, its own temp dir (so a stale
    /tmp/ray/ray_current_cluster is ignored) and an object store of ``object_store_mb`` MiB (the
    driver ships keys and rows only, so a small store is plenty). Its processes and temp dir are
    removed when the driver exits (atexit; ``ray.init`` turns SIGTERM into ``sys.exit`` and SIGINT
    raises KeyboardInterrupt) or is killed outright (SIGKILL, OOM killer: see :func:`_start_reaper`).
    """
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None and (os.environ.get("RAY_ADDRESS") or _live_local_cluster()):
        address = "auto"
    if address is not None:
        ray.init(address=address, configure_logging=False)
        return True
    temp_dir = tempfile.mkdtemp(prefix="raybb-ray-", dir="/tmp")
    reaper = _start_reaper(temp_dir)
    atexit.register(_shutdown_private_ray, temp_dir, reaper)  # runs before Ray's own exit hook
    with _loopback_only(), _env({_REAPER_TAG: temp_dir}):
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            _temp_dir=temp_dir,
            object_store_memory=object_store_mb * 1024 * 1024,
            configure_logging=False,
        )
    return True


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the processes started inside the block, then restore them."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """Make a local ``ray.init`` bind every service to 127.0.0.1.

    Ray maps ``_node_ip_address="127.0.0.1"`` to the machine's routable address unless
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is 0, and it reads that variable once, when ``ray`` is
    imported (here, always before us). So the constant is switched for the call as well as the
    variable (which the started processes inherit).
    """
    from ray._private import ray_constants

    old = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        with _env({ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR: "0"}):
            yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old


#: Environment variable the private instance's processes inherit: how the reaper finds them.
_REAPER_TAG = "RAYBB_PRIVATE_RAY"

_REAPER = r"""
import os, shutil, signal, sys, time
temp_dir = sys.argv[1]
tag = ("%s=" % sys.argv[2] + temp_dir).encode()
sys.stdin.buffer.read()  # returns when the driver's end of the pipe closes: exit, crash or SIGKILL

def ours(pid):
    # tagged environment (gcs, raylet, workers), or a "ray::" process (the agents, whose
    # environment the raylet filters) holding a file in this instance's unique temp dir
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            if tag in f.read().split(b"\0"):
                return True
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            if not f.read().startswith(b"ray::"):
                return False
        for fd in os.listdir("/proc/%d/fd" % pid):
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith(temp_dir + "/"):
                return True
    except OSError:
        pass
    return False

def find():
    if not os.path.isdir("/proc"):
        return []
    return [int(d) for d in os.listdir("/proc") if d.isdigit() and int(d) != os.getpid() and ours(int(d))]

for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 3.0)):
    pids = find()
    if not pids:
        break
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and find():
        time.sleep(0.2)
shutil.rmtree(temp_dir, ignore_errors=True)
"""


def _start_reaper(temp_dir: str) -> subprocess.Popen | None:
    """A small process that outlives the driver and removes the private Ray it started.

    It waits for EOF on a pipe from the driver (however the driver ends: exit, exception,
    SIGKILL), then stops every process of this instance: those carrying its tag in their
    environment (:data:`_REAPER_TAG`, unique per temp dir, so no other Ray is touched) and the
    ``ray::`` agents holding files in its temp dir; then it deletes the temp dir. Ray's dashboard and
    runtime-env agents otherwise outlived a SIGKILLed driver by minutes. Linux only (/proc);
    elsewhere it just removes the temp dir.
    """
    try:
        return subprocess.Popen(
            [sys.executable, "-c", _REAPER, temp_dir, _REAPER_TAG],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the driver's group must not stop it first
            close_fds=True,
        )
    except OSError:
        return None


def _shutdown_private_ray(temp_dir: str, reaper: subprocess.Popen | None = None) -> None:
    """Stop the private instance this process started and remove its session files."""
    try:
        ray.shutdown()
    finally:
        if reaper is not None and reaper.stdin is not None:
            with contextlib.suppress(OSError):
                reaper.stdin.close()  # the reaper now stops any straggler (agents) and removes temp_dir
        else:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _resolve_gpu(use_gpu: UseGpu) -> bool:
    if use_gpu == "auto":
        return ray.cluster_resources().get("GPU", 0) > 0
    return bool(use_gpu)


def _default_workers(use_gpu: bool) -> int:
    res = ray.cluster_resources()
    if use_gpu:
        return max(1, int(res.get("GPU", 0)))
    return max(1, int(res.get("CPU", 1)))


# --------------------------------------------------------------------------------------------
# The scheduler (shared by compress and decompress)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Kind:
    """What differs between a compress and a decompress job."""

    name: Literal["compress", "decompress"]
    schema: pa.Schema
    suffixes: tuple[str, ...]  # source objects to take
    out_col: str  # manifest column naming the output object
    out_suffix: str
    min_bpp: float  # bounds a shard's pixels estimated from object sizes
    row_cls: type

    @property
    def what(self) -> str:
        return "images" if self.name == "compress" else f"{BITSTREAM_SUFFIX} files"


_COMPRESS = _Kind(
    "compress", COMPRESS_SCHEMA, IMAGE_SUFFIXES, "bitstream_key", BITSTREAM_SUFFIX, SOURCE_MIN_BPP, CompressRow
)
_DECOMPRESS = _Kind(
    "decompress", DECOMPRESS_SCHEMA, (BITSTREAM_SUFFIX,), "output_key", ".png", BITSTREAM_MIN_BPP, DecompressRow
)


@dataclass
class _Slot:
    """One worker position: the actor now filling it (replaced when it dies)."""

    handle: Any
    name: str
    ready: bool = False
    in_flight: int = 0


@dataclass
class _Task:
    """A shard sent to an actor, and which attempt this is."""

    shard: Shard
    slot: int
    attempt: int
    handle: Any


_RETRYABLE = (ray.exceptions.RayError,)


@dataclass
class _Plan:
    """Where a job reads and writes, its summary, and (after :func:`_count_and_shard`) the work left."""

    kind: _Kind
    src: Location
    dst: Location
    manifest: Location
    summary: JobSummary
    todo_total: int  # images this run has to do
    shards: Iterator[Shard]


def _plan(kind: _Kind, src: str, dst: str, cfg: BucketJobConfig) -> _Plan:
    """Resolve the locations and check the source lists something (before Ray starts)."""
    opts = cfg.storage_options
    src_loc = resolve(src, opts)
    dst_loc = resolve(dst, cfg.dst_storage_options if cfg.dst_storage_options is not None else opts)
    if src_loc.protocol == dst_loc.protocol and src_loc.root.rstrip("/") == dst_loc.root.rstrip("/"):
        raise JobError("source and destination must be different prefixes")
    mloc = manifest_location(cfg.manifest, dst_loc)
    summary = JobSummary(kind=kind.name, run_id=new_run_id(), src=src_loc.url, dst=dst_loc.url, manifest=mloc.url)
    if not cfg.allow_empty and next(iter_objects(src_loc, kind.suffixes), None) is None:
        raise StorageError(
            f"no {kind.what} under {src_loc.url}: the prefix does not exist or lists none "
            "(a typo?); pass allow_empty=True (--allow-empty) to accept an empty source"
        )
    return _Plan(kind, src_loc, dst_loc, mloc, summary, 0, iter(()))


def _count_and_shard(plan: _Plan, cfg: BucketJobConfig) -> None:
    """Resume state, then a counting pass (totals for progress/ETA without holding the listing),
    then the lazy shard plan over what is left."""
    kind, summary = plan.kind, plan.summary
    done: KeySet | set[str] = set()
    if cfg.resume:
        done = done_keys(plan.manifest, plan.dst, kind.schema, kind.out_col, kind.out_suffix)
    for obj in iter_objects(plan.src, kind.suffixes):
        summary.total += 1
        if obj.key in done:
            summary.already_done += 1
        else:
            plan.todo_total += 1

    def todo() -> Iterator[ObjectInfo]:
        for obj in iter_objects(plan.src, kind.suffixes):
            if obj.key not in done:
                yield obj

    plan.shards = plan_shards(
        todo(),
        max_images=cfg.shard_size,
        max_bytes=cfg.shard_bytes,
        max_pixels=cfg.shard_pixels,
        pixels_of=lambda o: estimate_pixels(o.size, kind.min_bpp, cfg.max_pixels),
    )


class _JobRunner:
    """The scheduling state of one job and the steps over it.

    ``slots`` hold the actors (one per worker, replaced when lost); ``pending`` the shards in
    flight; ``retry_q`` the shards to run again; ``info_refs`` the readiness probes of actors still
    starting. :meth:`run` loops :meth:`submit` (fill ready actors up to ``limit``) and
    :meth:`collect` (one finished result: an actor ready, a shard's rows, or a failure to
    :meth:`retry`) until the shards are exhausted, then :meth:`finish` (or :meth:`abort`).
    """

    def __init__(
        self,
        plan: _Plan,
        cfg: BucketJobConfig,
        actor_kw: dict[str, Any],
        *,
        gpu: bool,
        workers: int,
        progress: Callable[[JobProgress], None] | None,
    ) -> None:
        self.plan, self.kind, self.summary, self.cfg = plan, plan.kind, plan.summary, cfg
        self.progress = progress
        self.workers = workers
        self.limit = cfg.max_in_flight or 2 * workers
        self.per_actor = max(1, -(-self.limit // workers))
        self.max_actor_starts = workers + max(3, 2 * workers) * cfg.max_attempts
        self.writer = ManifestWriter(
            plan.manifest,
            self.kind.schema,
            self.summary.run_id,
            flush_rows=cfg.flush_rows,
            flush_seconds=cfg.flush_seconds,
        )
        self.actor_cls = ray.remote(CompressorActor)
        self.actor_kw = actor_kw
        self.res_opts: dict[str, Any] = {"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": cfg.cpus_per_worker}
        if cfg.worker_memory_mb is not None and not gpu:
            self.res_opts["memory"] = cfg.worker_memory_mb * 2**20
        self.slots: list[_Slot | None] = []
        self.info_refs: dict[Any, int] = {}  # readiness probe -> slot
        self.pending: dict[Any, _Task] = {}
        self.retry_q: deque[tuple[Shard, int]] = deque()
        self.shards_exhausted = False
        self.generation = 0
        self.t0 = self.last_ready = time.monotonic()
        self.last_progress = 0.0

    # -- actors --------------------------------------------------------------------------------
    def start_actor(self, i: int) -> None:
        """Put a fresh actor in slot ``i`` (or leave it empty once the start budget is spent)."""
        if self.summary.actors_started >= self.max_actor_starts:
            self.slots[i] = None
            return
        self.generation += 1
        name = f"raybb-{self.kind.name}-{self.summary.run_id}-w{i}-g{self.generation}"
        handle = self.actor_cls.options(
            name=name, scheduling_strategy="SPREAD", max_restarts=0, max_task_retries=0, **self.res_opts
        ).remote(self.plan.src, self.plan.dst, **self.actor_kw)
        self.slots[i] = _Slot(handle=handle, name=name)
        self.info_refs[handle.info.remote()] = i
        self.summary.actors_started += 1

    def lose_actor(self, i: int) -> None:
        """Slot ``i``'s actor died (or will not start): kill it for good and start another."""
        slot = self.slots[i]
        if slot is None:
            return
        self.summary.actors_lost += 1
        ray.kill(slot.handle, no_restart=True)
        self.start_actor(i)

    def kill_actors(self) -> None:
        for s in self.slots:
            if s is not None:
                ray.kill(s.handle, no_restart=True)

    # -- work ----------------------------------------------------------------------------------
    def next_shard(self) -> tuple[Shard, int] | None:
        """A shard to retry first, else the next planned one (attempt 1); None when none is left."""
        if self.retry_q:
            return self.retry_q.popleft()
        if self.shards_exhausted:
            return None
        s = next(self.plan.shards, None)
        if s is None:
            self.shards_exhausted = True
            return None
        self.summary.shards += 1
        return s, 1

    def submit(self) -> None:
        """Send shards to ready actors with room (least loaded first), up to the global limit."""
        while len(self.pending) < self.limit:
            ready = [i for i, s in enumerate(self.slots) if s is not None and s.ready and s.in_flight < self.per_actor]
            if not ready:
                return
            item = self.next_shard()
            if item is None:
                return
            shard, attempt = item
            i = min(ready, key=lambda j: self.slots[j].in_flight)  # type: ignore[union-attr]
            slot = self.slots[i]
            assert slot is not None
            method = slot.handle.compress_shard if self.kind.name == "compress" else slot.handle.decompress_shard
            ref = method.remote(shard, attempt, self.cfg.overwrite or attempt > 1)
            self.pending[ref] = _Task(shard, i, attempt, slot.handle)
            slot.in_flight += 1

    def done(self) -> bool:
        return not self.pending and not self.retry_q and self.shards_exhausted

    def check_alive(self) -> None:
        """JobError when nothing is running and nothing can: every actor lost, or none ready in time."""
        if not self.pending and not self.info_refs and all(s is None for s in self.slots):
            raise JobError(f"no worker could be kept alive ({self.summary.actors_lost} lost)")
        timeout = self.cfg.actor_start_timeout
        if not self.pending and time.monotonic() - self.last_ready > timeout:
            raise JobError(f"no worker became ready within {timeout:.0f}s (resources: {ray.cluster_resources()})")

    def collect(self) -> None:
        """Wait (up to 1 s) for one result and handle it."""
        wait_on = list(self.pending) + list(self.info_refs)
        if not wait_on:
            return
        finished, _ = ray.wait(wait_on, num_returns=1, timeout=1.0)
        for ref in finished:
            if ref in self.info_refs:
                self._actor_ready(ref)
            else:
                self._shard_done(ref)

    def _actor_ready(self, ref: Any) -> None:
        i = self.info_refs.pop(ref)
        slot = self.slots[i]
        try:
            ray.get(ref)
        except _RETRYABLE:
            self.lose_actor(i)
            return
        if slot is not None:
            slot.ready = True
            self.last_ready = time.monotonic()

    def _shard_done(self, ref: Any) -> None:
        task = self.pending.pop(ref)
        slot = self.slots[task.slot]
        same = slot is not None and slot.handle is task.handle  # not already replaced
        if same:
            slot.in_flight -= 1
        try:
            rows = ray.get(ref)
        except ray.exceptions.RayActorError as e:
            # The actor (or its node) died: replace it (once), requeue the shard.
            if same:
                self.lose_actor(task.slot)
            self.retry(task, e)
            return
        except _RETRYABLE as e:
            self.retry(task, e)
            return
        self.record(rows)
        self.last_ready = time.monotonic()
        self.emit()

    def retry(self, task: _Task, e: BaseException) -> None:
        """Requeue a failed shard, or after ``max_attempts`` give each of its images an error row."""
        cause = getattr(e, "cause", None) or e  # RayTaskError: the exception the actor raised
        text = " ".join(str(cause).split())
        reason = f"{type(cause).__name__}: {text}"[:500]
        if task.attempt >= self.cfg.max_attempts:
            self.fail_shard(task.shard, task.attempt, reason)
            return
        self.summary.shard_retries += 1
        self.retry_q.append((task.shard, task.attempt + 1))

    def fail_shard(self, shard: Shard, attempt: int, reason: str) -> None:
        now = datetime.now(UTC)
        error = f"shard failed after {attempt} attempts: {reason}"
        rows = [
            self.kind.row_cls(
                key=k, status=STATUS_ERROR, error=error, run_id=self.summary.run_id, attempt=attempt, finished_at=now
            )
            for k in shard.keys
        ]
        self.record(rows)

    def record(self, rows: list[Any]) -> None:
        """Count ``rows`` into the summary and hand them to the manifest writer."""
        s = self.summary
        for r in rows:
            s.processed += 1
            if r.status == STATUS_OK:
                s.ok += 1
                if r.width and r.height:
                    s.megapixels += r.width * r.height / 1e6
            elif r.status == STATUS_SKIPPED:
                s.skipped += 1
            else:
                s.errors += 1
                if len(s.error_samples) < 20:
                    s.error_samples.append(f"{r.key}: {r.error}")
            if self.kind.name == "compress":
                s.bytes_in += r.source_bytes or 0
                s.bytes_out += r.bitstream_bytes or 0
            else:
                s.bytes_in += r.bitstream_bytes or 0
                s.bytes_out += r.output_bytes or 0
        self.writer.add(rows)

    def emit(self, force: bool = False) -> None:
        """Call the progress callback (at most about once a second unless ``force``)."""
        now = time.monotonic()
        if self.progress is None or (not force and now - self.last_progress < 1.0):
            return
        self.last_progress = now
        s = self.summary
        el = now - self.t0
        rate = s.processed / el if el > 0 else 0.0
        remaining = self.plan.todo_total - s.processed
        self.progress(
            JobProgress(
                done=s.processed,
                total=self.plan.todo_total,
                ok=s.ok,
                errors=s.errors,
                skipped=s.skipped,
                already_done=s.already_done,
                elapsed_s=el,
                images_per_s=rate,
                eta_s=remaining / rate if rate > 0 else None,
                workers=sum(1 for x in self.slots if x is not None and x.ready),
            )
        )

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> JobSummary:
        for i in range(self.workers):
            self.slots.append(None)
            self.start_actor(i)
        self.t0 = self.last_ready = time.monotonic()
        try:
            while not self.step():
                pass
            self.writer.close()
        except BaseException:
            self.abort()
            raise
        return self.finish()

    def step(self) -> bool:
        """One round: submit, then collect one result; True once everything is done."""
        self.submit()
        if self.done():
            return True
        self.check_alive()
        self.collect()
        self.emit()
        return False

    def finish(self) -> JobSummary:
        """After the manifest is closed (with its _SUCCESS marker): stop the actors, final progress."""
        self.kill_actors()
        self.summary.seconds = time.monotonic() - self.t0
        self.emit(force=True)
        return self.summary

    def abort(self) -> None:
        """Keep what was written (crash-safe files), without the _SUCCESS marker of a whole job."""
        try:
            self.writer.close(complete=False)
        finally:
            self.kill_actors()


def _actor_kw(kind: _Kind, cfg: BucketJobConfig, run_id: str, gpu: bool) -> dict[str, Any]:
    """Constructor arguments of each :class:`CompressorActor`."""
    kw: dict[str, Any] = dict(
        run_id=run_id,
        model=cfg.model,
        sampler=cfg.sampler,
        device="cuda" if gpu else "cpu",
        max_pixels=cfg.max_pixels,
        torch_threads=None if gpu else 1,
        codec_factory=cfg.codec_factory,
    )
    if isinstance(cfg, CompressJobConfig):
        kw.update(effort=cfg.effort, verify=cfg.verify)
        if cfg.quality is not None:
            kw["model"] = cfg.quality  # the codec factory resolves a quality like a model name
        encode = {"metric": cfg.metric, "target_bpp": cfg.target_bpp, "target_psnr": cfg.target_psnr}
        defaults = {"metric": "mse", "target_bpp": None, "target_psnr": None}
        kw.update({k: v for k, v in encode.items() if v != defaults[k]})  # only what was asked for
    if cfg.tile_pixels is not None:
        kw["tile_pixels"] = cfg.tile_pixels
    elif cfg.worker_memory_mb is not None and not gpu:
        # Ray reserves the budget per actor, and the actor's tiles are sized to stay inside it for
        # images up to max_pixels (a GPU actor sizes its tiles from its card instead)
        from raybb.tiling import tile_pixels_for_memory

        kw["tile_pixels"] = tile_pixels_for_memory(cfg.worker_memory_mb * 2**20, cfg.max_pixels)
    return kw


def _run_job(
    kind: _Kind, src: str, dst: str, cfg: BucketJobConfig, progress: Callable[[JobProgress], None] | None
) -> JobSummary:
    plan = _plan(kind, src, dst, cfg)
    init_ray(cfg.address)
    gpu = _resolve_gpu(cfg.gpu)
    workers = cfg.workers or _default_workers(gpu)
    plan.summary.num_workers, plan.summary.use_gpu = workers, gpu
    _count_and_shard(plan, cfg)
    if plan.todo_total == 0:  # nothing new: no actor (and no model load) needed
        ManifestWriter(
            plan.manifest, kind.schema, plan.summary.run_id, flush_rows=cfg.flush_rows, flush_seconds=cfg.flush_seconds
        ).close()
        return plan.summary
    actor_kw = _actor_kw(kind, cfg, plan.summary.run_id, gpu)
    return _JobRunner(plan, cfg, actor_kw, gpu=gpu, workers=workers, progress=progress).run()


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------
def compress_bucket(
    src: str,
    dst: str,
    config: CompressJobConfig | None = None,
    *,
    progress: Callable[[JobProgress], None] | None = None,
    **settings: Any,
) -> JobSummary:
    """Compress every image under ``src`` to ``<dst>/<key>.rbb`` on Ray actors; write the manifest.

    ``src``/``dst``: local paths or fsspec URLs (``s3://``, ``file://``, ``memory://`` for
    in-process only). The settings are the fields of :class:`CompressJobConfig` (the same names as
    the options of ``raybb bucket compress`` and ``jobs/compress_bucket.py``), given as ``config``
    and/or as keywords (keywords win): e.g. ``workers``, ``gpu`` (True/False/"auto": auto = GPUs
    present now; pass True on an autoscaling cluster whose GPU nodes start at 0), ``model`` or
    ``quality``, ``effort``, ``shard_size``, ``worker_memory_mb``, ``resume``, ``verify``,
    ``storage_options`` (fsspec options; credentials in them are never logged or stored).
    Bad settings raise ValueError/TypeError before Ray starts. ``progress``: called with a
    :class:`JobProgress` after shards finish.
    """
    cfg = config_from(CompressJobConfig, config, settings)
    return _run_job(_COMPRESS, src, dst, cfg, progress)


def decompress_bucket(
    src: str,
    dst: str,
    config: DecompressJobConfig | None = None,
    *,
    progress: Callable[[JobProgress], None] | None = None,
    **settings: Any,
) -> JobSummary:
    """Decode every ``.rbb`` under ``src`` to PNG under ``dst`` (``a.jpg.rbb`` -> ``a.jpg.png``).

    Same machinery and settings as :func:`compress_bucket` (those of :class:`DecompressJobConfig`);
    the manifest (default ``<dst>/_manifest.parquet``) uses the decompress schema. Each bitstream is
    decoded with the model its fingerprint names (``model``, else any installed model: ``raybb models``).
    """
    cfg = config_from(DecompressJobConfig, config, settings)
    return _run_job(_DECOMPRESS, src, dst, cfg, progress)
