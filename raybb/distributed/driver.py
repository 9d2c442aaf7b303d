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
from raybb.distributed.partition import (
    BITSTREAM_MIN_BPP,
    DEFAULT_SHARD_BYTES,
    DEFAULT_SHARD_IMAGES,
    DEFAULT_SHARD_PIXELS,
    SOURCE_MIN_BPP,
    Shard,
    estimate_pixels,
    plan_shards,
)
from raybb.errors import RaybbError, StorageError
from raybb.imageio import DEFAULT_MAX_PIXELS
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

__all__ = ["compress_bucket", "decompress_bucket", "JobSummary", "JobProgress", "init_ray", "JobError"]

UseGpu = bool | Literal["auto"]


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
# Resume state
# --------------------------------------------------------------------------------------------
def _done_keys(mloc: Location, schema: pa.Schema, dst: Location, out_col: str, out_suffix: str | None) -> KeySet:
    """Keys marked ok/skipped in the manifest whose output object still exists at ``dst``.

    Streamed from the manifest and the destination listing; kept as 16-byte digests per key.
    """
    return done_keys(mloc, dst, schema, out_col, out_suffix)


# --------------------------------------------------------------------------------------------
# The scheduling loop (shared by compress and decompress)
# --------------------------------------------------------------------------------------------
@dataclass
class _Slot:
    handle: Any
    name: str
    ready: bool = False
    in_flight: int = 0


@dataclass
class _Task:
    shard: Shard
    slot: int
    attempt: int
    handle: Any


_RETRYABLE = (ray.exceptions.RayError,)


def _run_job(
    *,
    kind: Literal["compress", "decompress"],
    src: str,
    dst: str,
    manifest: str | None,
    num_workers: int | None,
    use_gpu: UseGpu,
    shard_size: int,
    shard_bytes: int,
    shard_pixels: int,
    worker_memory_mb: int | None,
    max_in_flight: int | None,
    verify: bool,
    model: str | None,
    sampler: str | None,
    effort: int,
    resume: bool,
    overwrite: bool,
    progress: Callable[[JobProgress], None] | None,
    storage_options: dict | None,
    dst_storage_options: dict | None,
    max_attempts: int,
    cpus_per_worker: float,
    max_pixels: int,
    ray_address: str | None,
    flush_rows: int,
    flush_seconds: float,
    actor_start_timeout: float,
    codec_factory: str | None,
    allow_empty: bool,
) -> JobSummary:
    src_loc = resolve(src, storage_options)
    dst_loc = resolve(dst, dst_storage_options if dst_storage_options is not None else storage_options)
    if src_loc.protocol == dst_loc.protocol and src_loc.root.rstrip("/") == dst_loc.root.rstrip("/"):
        raise JobError("source and destination must be different prefixes")
    schema = COMPRESS_SCHEMA if kind == "compress" else DECOMPRESS_SCHEMA
    suffixes: tuple[str, ...] = IMAGE_SUFFIXES if kind == "compress" else (BITSTREAM_SUFFIX,)
    out_col, out_suffix = ("bitstream_key", BITSTREAM_SUFFIX) if kind == "compress" else ("output_key", ".png")
    mloc = manifest_location(manifest, dst_loc)
    run_id = new_run_id()
    summary = JobSummary(kind=kind, run_id=run_id, src=src_loc.url, dst=dst_loc.url, manifest=mloc.url)
    if not allow_empty and next(iter_objects(src_loc, suffixes), None) is None:
        what = "images" if kind == "compress" else f"{BITSTREAM_SUFFIX} files"
        raise StorageError(
            f"no {what} under {src_loc.url}: the prefix does not exist or lists none "
            "(a typo?); pass allow_empty=True (--allow-empty) to accept an empty source"
        )

    init_ray(ray_address)
    gpu = _resolve_gpu(use_gpu)
    n_workers = num_workers or _default_workers(gpu)
    summary.num_workers, summary.use_gpu = n_workers, gpu
    limit = max_in_flight or 2 * n_workers

    done: KeySet | set[str] = set()
    if resume:
        done = _done_keys(mloc, schema, dst_loc, out_col, out_suffix)
    # Counting pass: totals for progress/ETA without holding the listing.
    todo_total = 0
    for obj in iter_objects(src_loc, suffixes):
        summary.total += 1
        if obj.key in done:
            summary.already_done += 1
        else:
            todo_total += 1

    def todo() -> Iterator[ObjectInfo]:
        for obj in iter_objects(src_loc, suffixes):
            if obj.key not in done:
                yield obj

    bpp = SOURCE_MIN_BPP if kind == "compress" else BITSTREAM_MIN_BPP  # shards bounded by estimated pixels
    shards = plan_shards(
        todo(),
        max_images=shard_size,
        max_bytes=shard_bytes,
        max_pixels=shard_pixels,
        pixels_of=lambda o: estimate_pixels(o.size, bpp, max_pixels),
    )
    writer = ManifestWriter(mloc, schema, run_id, flush_rows=flush_rows, flush_seconds=flush_seconds)
    if todo_total == 0:  # nothing new: no actor (and no model load) needed
        writer.close()
        return summary

    actor_cls = ray.remote(CompressorActor)
    res_opts: dict[str, Any] = {"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": cpus_per_worker}
    ctor_kw = dict(
        run_id=run_id,
        model=model,
        sampler=sampler,
        effort=effort,
        device="cuda" if gpu else "cpu",
        verify=verify,
        max_pixels=max_pixels,
        torch_threads=None if gpu else 1,
        codec_factory=codec_factory,
    )
    if worker_memory_mb is not None and not gpu:
        # Ray reserves the budget per actor, and the actor's tiles are sized to stay inside it for
        # images up to max_pixels (a GPU actor sizes its tiles from its card instead)
        from raybb.tiling import tile_pixels_for_memory

        res_opts["memory"] = worker_memory_mb * 2**20
        ctor_kw["tile_pixels"] = tile_pixels_for_memory(worker_memory_mb * 2**20, max_pixels)
    slots: list[_Slot | None] = []
    info_refs: dict[Any, int] = {}
    generation = 0
    max_actor_starts = n_workers + max(3, 2 * n_workers) * max_attempts

    def start_actor(i: int) -> None:
        nonlocal generation
        if summary.actors_started >= max_actor_starts:
            slots[i] = None
            return
        generation += 1
        name = f"raybb-{kind}-{run_id}-w{i}-g{generation}"
        handle = actor_cls.options(
            name=name, scheduling_strategy="SPREAD", max_restarts=0, max_task_retries=0, **res_opts
        ).remote(src_loc, dst_loc, **ctor_kw)
        slots[i] = _Slot(handle=handle, name=name)
        info_refs[handle.info.remote()] = i
        summary.actors_started += 1

    for i in range(n_workers):
        slots.append(None)
        start_actor(i)

    pending: dict[Any, _Task] = {}
    retry_q: deque[tuple[Shard, int]] = deque()
    shards_exhausted = False
    t0 = time.monotonic()
    last_ready = t0
    last_progress = 0.0

    def emit(force: bool = False) -> None:
        nonlocal last_progress
        now = time.monotonic()
        if progress is None or (not force and now - last_progress < 1.0):
            return
        last_progress = now
        el = now - t0
        rate = summary.processed / el if el > 0 else 0.0
        remaining = todo_total - summary.processed
        eta = remaining / rate if rate > 0 else None
        ready = sum(1 for s in slots if s is not None and s.ready)
        progress(
            JobProgress(
                done=summary.processed,
                total=todo_total,
                ok=summary.ok,
                errors=summary.errors,
                skipped=summary.skipped,
                already_done=summary.already_done,
                elapsed_s=el,
                images_per_s=rate,
                eta_s=eta,
                workers=ready,
            )
        )

    def record(rows: list[Any]) -> None:
        for r in rows:
            summary.processed += 1
            if r.status == STATUS_OK:
                summary.ok += 1
                if r.width and r.height:
                    summary.megapixels += r.width * r.height / 1e6
            elif r.status == STATUS_SKIPPED:
                summary.skipped += 1
            else:
                summary.errors += 1
                if len(summary.error_samples) < 20:
                    summary.error_samples.append(f"{r.key}: {r.error}")
            if kind == "compress":
                summary.bytes_in += r.source_bytes or 0
                summary.bytes_out += r.bitstream_bytes or 0
            else:
                summary.bytes_in += r.bitstream_bytes or 0
                summary.bytes_out += r.output_bytes or 0
        writer.add(rows)

    def fail_shard(shard: Shard, attempt: int, reason: str) -> None:
        row_cls = CompressRow if kind == "compress" else DecompressRow
        now = datetime.now(UTC)
        rows = [
            row_cls(
                key=k,
                status=STATUS_ERROR,
                error=f"shard failed after {attempt} attempts: {reason}",
                run_id=run_id,
                attempt=attempt,
                finished_at=now,
            )
            for k in shard.keys
        ]
        record(rows)

    def lose_actor(i: int) -> None:
        slot = slots[i]
        if slot is None:
            return
        summary.actors_lost += 1
        ray.kill(slot.handle, no_restart=True)
        start_actor(i)

    def next_shard() -> tuple[Shard, int] | None:
        nonlocal shards_exhausted
        if retry_q:
            return retry_q.popleft()
        if shards_exhausted:
            return None
        s = next(shards, None)
        if s is None:
            shards_exhausted = True
            return None
        summary.shards += 1
        return s, 1

    per_actor = max(1, -(-limit // n_workers))
    try:
        while True:
            # Fill: ready actors with room, up to the global limit.
            while len(pending) < limit:
                ready = [i for i, s in enumerate(slots) if s is not None and s.ready and s.in_flight < per_actor]
                if not ready:
                    break
                item = next_shard()
                if item is None:
                    break
                shard, attempt = item
                i = min(ready, key=lambda j: slots[j].in_flight)  # type: ignore[union-attr]
                slot = slots[i]
                assert slot is not None
                method = slot.handle.compress_shard if kind == "compress" else slot.handle.decompress_shard
                ref = method.remote(shard, attempt, overwrite or attempt > 1)
                pending[ref] = _Task(shard, i, attempt, slot.handle)
                slot.in_flight += 1

            if not pending and not retry_q and shards_exhausted:
                break
            if not pending and not info_refs:
                if all(s is None for s in slots):
                    raise JobError(f"no worker could be kept alive ({summary.actors_lost} lost)")
            if not pending and time.monotonic() - last_ready > actor_start_timeout:
                raise JobError(
                    f"no worker became ready within {actor_start_timeout:.0f}s (resources: {ray.cluster_resources()})"
                )

            wait_on = list(pending) + list(info_refs)
            if not wait_on:
                continue
            finished, _ = ray.wait(wait_on, num_returns=1, timeout=1.0)
            for ref in finished:
                if ref in info_refs:
                    i = info_refs.pop(ref)
                    slot = slots[i]
                    try:
                        ray.get(ref)
                        if slot is not None:
                            slot.ready = True
                            last_ready = time.monotonic()
                    except _RETRYABLE:
                        lose_actor(i)
                    continue
                task = pending.pop(ref)
                slot = slots[task.slot]
                same = slot is not None and slot.handle is task.handle
                if same:
                    slot.in_flight -= 1
                try:
                    rows = ray.get(ref)
                except ray.exceptions.RayActorError as e:
                    # The actor (or its node) died: replace it (once), requeue the shard.
                    if same:
                        lose_actor(task.slot)
                    _requeue(task, e, retry_q, summary, max_attempts, fail_shard)
                    continue
                except _RETRYABLE as e:
                    _requeue(task, e, retry_q, summary, max_attempts, fail_shard)
                    continue
                record(rows)
                last_ready = time.monotonic()
                emit()
            emit()
        writer.close()
    except BaseException:
        # Keep what we have (crash-safe files); no _SUCCESS marker for a half job.
        try:
            writer.close(complete=False)
        finally:
            for s in slots:
                if s is not None:
                    ray.kill(s.handle, no_restart=True)
        raise
    for s in slots:
        if s is not None:
            ray.kill(s.handle, no_restart=True)
    summary.seconds = time.monotonic() - t0
    emit(force=True)
    return summary


def _requeue(
    task: _Task,
    e: BaseException,
    retry_q: deque,
    summary: JobSummary,
    max_attempts: int,
    fail_shard: Callable[[Shard, int, str], None],
) -> None:
    cause = getattr(e, "cause", None) or e  # RayTaskError: the exception the actor raised
    text = " ".join(str(cause).split())
    reason = f"{type(cause).__name__}: {text}"[:500]
    if task.attempt >= max_attempts:
        fail_shard(task.shard, task.attempt, reason)
        return
    summary.shard_retries += 1
    retry_q.append((task.shard, task.attempt + 1))


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------
def compress_bucket(
    src: str,
    dst: str,
    *,
    manifest: str | None = None,
    num_workers: int | None = None,
    use_gpu: UseGpu = "auto",
    shard_size: int = DEFAULT_SHARD_IMAGES,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    shard_pixels: int = DEFAULT_SHARD_PIXELS,
    worker_memory_mb: int | None = None,
    max_in_flight: int | None = None,
    verify: bool = False,
    model: str | None = None,
    sampler: str | None = None,
    effort: int = 0,
    resume: bool = True,
    overwrite: bool = False,
    progress: Callable[[JobProgress], None] | None = None,
    storage_options: dict | None = None,
    dst_storage_options: dict | None = None,
    max_attempts: int = 3,
    cpus_per_worker: float = 0.5,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    ray_address: str | None = None,
    flush_rows: int = 1000,
    flush_seconds: float = 20.0,
    actor_start_timeout: float = 900.0,
    codec_factory: str | None = None,
    allow_empty: bool = False,
) -> JobSummary:
    """Compress every image under ``src`` to ``<dst>/<key>.rbb`` on Ray actors; write the manifest.

    ``src``/``dst``: local paths or fsspec URLs (``s3://``, ``file://``, ``memory://`` for
    in-process only). ``manifest``: defaults to ``<dst>/_manifest.parquet``. ``num_workers``:
    actors (default: one per GPU, else one per CPU of the cluster); ``use_gpu``: True/False/"auto"
    (auto = GPUs present now; pass True on an autoscaling cluster whose GPU nodes start at 0).
    CPU actors take ``cpus_per_worker`` logical CPUs (a fractional slot, so they never starve
    other Ray work) and one torch thread each. ``shard_size``/``shard_bytes``/``shard_pixels``: shard
    limits (pixels estimated from object sizes, partition.py). ``worker_memory_mb``: memory Ray
    reserves for each CPU actor; its tiles are sized to code images of ``max_pixels`` within it.
    ``verify``: decode each bitstream again before marking it ok. ``resume``: skip what an earlier
    run finished. ``overwrite``: recompress existing outputs that have no manifest row.
    ``progress``: called with a :class:`JobProgress` after shards finish. ``storage_options``:
    fsspec options for src and dst (``dst_storage_options`` overrides for dst); credentials in them
    are never logged or stored. ``codec_factory``: ``"module:function"`` building the codec
    (default ``raybb.codec:load_codec``). ``allow_empty``: a source that does not exist or lists no
    image is a :class:`~raybb.errors.StorageError` (almost always a typo) unless this is True.
    ``effort``: encoder effort 0..MAX_EFFORT (raybb.refine; checked here, before Ray starts:
    ValueError), recorded per row in the manifest.
    """
    from raybb.refine import effort_level as _effort_level

    _effort_level(effort)
    return _run_job(kind="compress", **_kw(locals()))


def decompress_bucket(
    src: str,
    dst: str,
    *,
    manifest: str | None = None,
    num_workers: int | None = None,
    use_gpu: UseGpu = "auto",
    shard_size: int = DEFAULT_SHARD_IMAGES,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    shard_pixels: int = DEFAULT_SHARD_PIXELS,
    worker_memory_mb: int | None = None,
    max_in_flight: int | None = None,
    model: str | None = None,
    sampler: str | None = None,
    resume: bool = True,
    overwrite: bool = False,
    progress: Callable[[JobProgress], None] | None = None,
    storage_options: dict | None = None,
    dst_storage_options: dict | None = None,
    max_attempts: int = 3,
    cpus_per_worker: float = 0.5,
    ray_address: str | None = None,
    flush_rows: int = 1000,
    flush_seconds: float = 20.0,
    actor_start_timeout: float = 900.0,
    codec_factory: str | None = None,
    allow_empty: bool = False,
) -> JobSummary:
    """Decode every ``.rbb`` under ``src`` to PNG under ``dst`` (``a.jpg.rbb`` -> ``a.jpg.png``).

    Same machinery and options as :func:`compress_bucket`; the manifest (default
    ``<dst>/_manifest.parquet``) uses the decompress schema. Each bitstream is decoded with the
    model its fingerprint names (``model``, else any installed model: ``raybb models``).
    """
    return _run_job(kind="decompress", verify=False, max_pixels=DEFAULT_MAX_PIXELS, effort=0, **_kw(locals()))


def _kw(local_vars: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in local_vars.items() if not k.startswith("_")}
