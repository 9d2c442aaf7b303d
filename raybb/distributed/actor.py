"""The Ray actor that compresses (or decompresses) whole shards.

Each actor builds its codec once (one model replica per GPU, or per CPU slot with one torch
thread), reads its shard's objects itself, writes the outputs itself (atomically), and returns
only small manifest rows to the driver, so the driver never holds image bytes.

Per-image failures (undecodable image, too large, codec error, an output key the store refuses,
a permission error) become ``error`` rows with their cause and the shard goes on. Only transient
storage failures that outlast the storage layer's retries (an outage) raise out of the shard, so
the driver retries the whole shard (possibly on another actor); outputs are atomic, so a retried
shard only rewrites complete objects with the same content.

Decompression picks the model of each bitstream by the fingerprint in its header (as ``raybb
decompress`` does): the actor's own model (``model``, or the default) first, then any installed
model (``raybb models``, ``$RAYBB_MODELS_DIR``); loaded codecs are cached per actor.
"""

from __future__ import annotations

import importlib
import math
import os
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np

from raybb.distributed.partition import Shard
from raybb.errors import BitstreamError, ImageError, ModelMismatch, StorageError
from raybb.imageio import DEFAULT_MAX_PIXELS, ImageWarning, decode_image, encode_png
from raybb.storage import (
    STATUS_ERROR,
    STATUS_OK,
    STATUS_SKIPPED,
    CompressRow,
    DecompressRow,
    Location,
    exists,
    read_bytes,
    sha256_hex,
    write_atomic,
)

__all__ = ["CompressorActor", "bitstream_key_for", "png_key_for", "BITSTREAM_SUFFIX"]

BITSTREAM_SUFFIX = ".rbb"


def bitstream_key_for(source_key: str) -> str:
    """``photos/a.jpg`` -> ``photos/a.jpg.rbb``: the source extension stays, so a.jpg/a.png never collide."""
    return source_key + BITSTREAM_SUFFIX


def png_key_for(bitstream_key: str) -> str:
    """``photos/a.jpg.rbb`` -> ``photos/a.jpg.png``; ``photos/a.png.rbb`` -> ``photos/a.png``."""
    base = bitstream_key[: -len(BITSTREAM_SUFFIX)] if bitstream_key.endswith(BITSTREAM_SUFFIX) else bitstream_key
    return base if base.lower().endswith(".png") else base + ".png"


def _err(e: BaseException) -> str:
    msg = str(e).strip().replace("\n", " ")
    return f"{type(e).__name__}: {msg}"[:1000]


def _ms_ssim(rgb: np.ndarray, rec: np.ndarray, notes: list[str]) -> float | None:
    """MS-SSIM, or None (null in the manifest) with a note when the image is too small or too large."""
    from raybb import metrics

    v = float(metrics.ms_ssim_bounded(rgb, rec))
    if math.isnan(v):
        notes.append(metrics.ms_ssim_missing_reason(*rgb.shape[:2]))
        return None
    return v


def _load_factory(spec: str | None) -> Callable[..., Any]:
    """``"module:function"`` -> the function (default ``raybb.codec:load_codec``)."""
    mod, _, fn = (spec or "raybb.codec:load_codec").partition(":")
    return getattr(importlib.import_module(mod), fn)


class CompressorActor:
    """Owns one codec replica; ``compress_shard``/``decompress_shard`` return manifest rows.

    Plain class: the driver wraps it with ``ray.remote`` and the resource options it chooses, so it
    can also be used (and unit-tested) in-process.
    """

    def __init__(
        self,
        src: Location,
        dst: Location,
        *,
        run_id: str,
        model: str | None = None,
        sampler: str | None = None,
        device: str = "cpu",
        verify: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        torch_threads: int | None = 1,
        codec_factory: str | None = None,
        effort: int = 0,
        tile_pixels: int | None = None,
        metric: str | None = None,
        target_bpp: float | None = None,
        target_psnr: float | None = None,
    ) -> None:
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        self.src, self.dst = src, dst
        self.run_id = run_id
        self.verify = verify
        self.max_pixels = max_pixels
        self.device = device
        self._factory = _load_factory(codec_factory)
        self._by_fingerprint = codec_factory is None  # a custom codec is used as is
        from raybb.tiling import limit_heap_retention

        limit_heap_retention()  # freed tiles go back to the OS: the actor's RSS stays near its peak use
        #: None: the device's default tile budget
        self._codec_kw = {} if tile_pixels is None else {"tile_pixels": tile_pixels}
        self.codec = self._factory(model=model, sampler=sampler, device=device, **self._codec_kw)
        #: decompress: codecs by the 8-byte fingerprint a bitstream carries (the actor's own first)
        self._codecs: dict[bytes, Any] = {}
        if self._by_fingerprint:
            self._codecs[self.codec.loaded.short_fingerprint] = self.codec
        self.effort = effort
        #: encoder settings beyond the codec's defaults (a custom codec need not accept any)
        self._encode_kw: dict[str, Any] = {"effort": effort} if effort else {}
        extra = {"metric": metric, "target_bpp": target_bpp, "target_psnr": target_psnr}
        self._encode_kw.update({k: v for k, v in extra.items() if v is not None})
        self.worker_id, self.node_id = _ray_ids()

    # -- small helpers -------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Who and what this actor is (the driver waits for this before sending work)."""
        return {
            "worker_id": self.worker_id,
            "node_id": self.node_id,
            "pid": os.getpid(),
            "model_fingerprint": self.codec.fingerprint,
            "model_name": self.codec.model_name,
            "sampler": self.codec.sampler_name,
        }

    def _base_row(self, key: str, attempt: int) -> CompressRow:
        return CompressRow(
            key=key,
            status=STATUS_ERROR,
            bitstream_key=bitstream_key_for(key),
            model_fingerprint=self.codec.fingerprint,
            model_name=self.codec.model_name,
            sampler=self.codec.sampler_name,
            worker_id=self.worker_id,
            node_id=self.node_id,
            run_id=self.run_id,
            attempt=attempt,
        )

    # -- compress ------------------------------------------------------------------------------
    def compress_shard(self, shard: Shard, attempt: int = 1, overwrite: bool = False) -> list[CompressRow]:
        """Compress every key of ``shard``; one row per key, in order.

        ``overwrite=False``: a bitstream that already exists (left by a run whose manifest rows were
        lost) is decoded and checked against the source instead of recompressed (status skipped).
        """
        return [self._compress_one(key, attempt, overwrite) for key in shard.keys]

    def _compress_one(self, key: str, attempt: int, overwrite: bool) -> CompressRow:
        row = self._base_row(key, attempt)
        return self._per_image(row, self._compress_into, overwrite)

    def _per_image(self, row: Any, work: Callable[[Any, bool], Any], overwrite: bool) -> Any:
        """``work(row, overwrite)``; any failure but an outage becomes this image's error row."""
        try:
            return work(row, overwrite)
        except StorageError as e:
            if e.transient:
                raise  # an outage: the driver retries the shard on a fresh actor
            return self._finish(row, error=_err(e))
        except Exception as e:  # noqa: BLE001 - one bad image or bitstream must not stop the shard
            return self._finish(row, error=_err(e))

    def _compress_into(self, row: CompressRow, overwrite: bool) -> CompressRow:
        from raybb import metrics

        key, out_key = row.key, row.bitstream_key
        assert out_key is not None
        try:
            data = read_bytes(self.src, key)
        except FileNotFoundError as e:
            return self._finish(row, error=f"source object disappeared: {_err(e)}")
        row.source_bytes, row.source_sha256 = len(data), sha256_hex(data)
        notes: list[str] = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ImageWarning)
                rgb = decode_image(data, max_pixels=self.max_pixels)
            notes += [str(w.message) for w in caught if issubclass(w.category, ImageWarning)]
        except ImageError as e:
            return self._finish(row, error=_err(e))
        del data
        h, w = rgb.shape[:2]
        row.width, row.height = w, h

        if not overwrite and exists(self.dst, out_key):
            existing = read_bytes(self.dst, out_key)
            try:
                rec = self.codec.decompress(existing)
            except (ModelMismatch, BitstreamError):
                rec = None  # made by another model, or not ours: compress again below
            if rec is not None and rec.shape == rgb.shape:
                row.bitstream_bytes, row.bitstream_sha256 = len(existing), sha256_hex(existing)
                row.bpp = metrics.bpp(len(existing), h, w)
                row.psnr = float(metrics.psnr(rgb, rec))
                row.ms_ssim = _ms_ssim(rgb, rec, notes)
                row.verified = True
                row.status = STATUS_SKIPPED
                return self._finish(row, notes=notes)

        t0 = time.perf_counter()
        res = self.codec.compress_with_stats(rgb, **self._encode_kw)
        seconds = time.perf_counter() - t0
        if self.verify:
            dec = self.codec.decompress(res.data)
            if dec.shape != rgb.shape or not np.array_equal(dec, res.reconstruction):
                return self._finish(row, error="VerifyError: decoded image differs from the encoder's")
        write_atomic(self.dst, out_key, res.data)
        row.bitstream_bytes, row.bitstream_sha256 = len(res.data), sha256_hex(res.data)
        row.bpp = float(res.bpp)
        row.psnr = float(res.psnr)
        row.ms_ssim = float(res.ms_ssim)
        if math.isnan(row.ms_ssim):
            row.ms_ssim = None
            notes.append(metrics.ms_ssim_missing_reason(h, w))
        row.kl_bits = float(res.kl_bits)
        row.encode_seconds = float(getattr(res, "encode_seconds", None) or seconds)
        row.effort = self.effort
        row.refine_steps = int(getattr(res, "refine_steps", 0))
        row.refine_seconds = float(getattr(res, "refine_seconds", 0.0))
        row.verified = bool(self.verify)
        row.status = STATUS_OK
        return self._finish(row, notes=notes)

    @staticmethod
    def _finish(row: Any, error: str | None = None, notes: list[str] | None = None) -> Any:
        if error is not None:
            row.status, row.error = STATUS_ERROR, error
        if notes:
            row.warning = "; ".join(dict.fromkeys(notes))[:1000]
        row.finished_at = datetime.now(UTC)
        return row

    # -- decompress ----------------------------------------------------------------------------
    def decompress_shard(self, shard: Shard, attempt: int = 1, overwrite: bool = False) -> list[DecompressRow]:
        """Decode every bitstream of ``shard`` to a PNG under the destination; one row per key."""
        return [self._decompress_one(key, attempt, overwrite) for key in shard.keys]

    def _decompress_one(self, key: str, attempt: int, overwrite: bool) -> DecompressRow:
        row = DecompressRow(
            key=key,
            status=STATUS_ERROR,
            output_key=png_key_for(key),
            worker_id=self.worker_id,
            node_id=self.node_id,
            run_id=self.run_id,
            attempt=attempt,
        )
        return self._per_image(row, self._decompress_into, overwrite)

    def _decompress_into(self, row: DecompressRow, overwrite: bool) -> DecompressRow:
        key, out_key = row.key, row.output_key
        assert out_key is not None
        try:
            data = read_bytes(self.src, key)
        except FileNotFoundError as e:
            return self._finish(row, error=f"bitstream disappeared: {_err(e)}")
        row.bitstream_bytes, row.bitstream_sha256 = len(data), sha256_hex(data)
        t0 = time.perf_counter()
        codec = self._codec_for(data)
        rgb = codec.decompress(data)
        row.decode_seconds = time.perf_counter() - t0
        row.height, row.width = int(rgb.shape[0]), int(rgb.shape[1])
        row.model_fingerprint = codec.fingerprint
        png = encode_png(rgb)
        if overwrite or not exists(self.dst, out_key):
            write_atomic(self.dst, out_key, png)
            row.status = STATUS_OK
        else:
            row.status = STATUS_SKIPPED
        row.output_bytes, row.output_sha256 = len(png), sha256_hex(png)
        return self._finish(row)

    def _codec_for(self, data: bytes) -> Any:
        """The codec for this bitstream's model: by the fingerprint in its header (cached)."""
        if not self._by_fingerprint:
            return self.codec
        from raybb import bitstream
        from raybb.registry import find_by_fingerprint

        fp = bitstream.parse(data).fingerprint
        codec = self._codecs.get(fp)
        if codec is None:
            path = find_by_fingerprint(fp)
            if path is None:
                raise ModelMismatch(
                    f"bitstream made by model {fp.hex()}: not the given model and not installed "
                    "(see `raybb models`; add its folder to $RAYBB_MODELS_DIR or pass --model)"
                )
            codec = self._factory(model=str(path), sampler=None, device=self.device, **self._codec_kw)
            self._codecs[fp] = codec
        return codec


def _ray_ids() -> tuple[str | None, str | None]:
    """(actor id, node id) when running inside Ray, else (None, None)."""
    try:
        import ray

        if not ray.is_initialized():
            return None, None
        ctx = ray.get_runtime_context()
        actor = ctx.get_actor_id()
        return (actor if actor else f"pid-{os.getpid()}"), ctx.get_node_id()
    except Exception:  # noqa: BLE001 - ids are informational
        return None, None
