"""Classical codecs measured on this machine, as the yardstick for raybb.

Each codec is a ``ClassicalCodec`` with one integer ``quality`` knob (higher = more bits), a default
quality ladder chosen to span roughly 0.1-2 bpp on Kodak, and ``encode_at_bpp`` (bisection on the
quality) for "JPEG at a matched rate" comparisons. Encoder settings are each library's standard
default effort, so the numbers are what a user gets without tuning:

============  ==========================================  =======================================
name          library                                      settings
============  ==========================================  =======================================
``jpeg``      Pillow (libjpeg-turbo)                       4:2:0 chroma subsampling, baseline,
                                                           standard Huffman tables (Pillow default)
``webp``      Pillow (libwebp)                             lossy, ``method=4`` (libwebp default)
``avif``      Pillow (libavif + aom encoder)               YUV 4:2:0, 8-bit, ``speed=6`` (Pillow's
                                                           default), one thread
``jpegxl``    imagecodecs (libjxl)                         VarDCT, ``effort=7`` (libjxl default),
                                                           quality mapped to distance by libjxl,
                                                           one thread
============  ==========================================  =======================================

Encoders run single-threaded so timings are comparable with each other and with raybb on a
shared 2-core machine.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from raybb.errors import ImageError
from raybb.metrics import bpp as _bpp

__all__ = [
    "ClassicalCodec",
    "MatchedEncoding",
    "BASELINES",
    "baseline_names",
    "get_baseline",
    "library_versions",
]


@dataclass(frozen=True)
class MatchedEncoding:
    """The result of ``encode_at_bpp``: which quality was chosen and what it produced."""

    quality: int
    data: bytes
    bpp: float


@dataclass(frozen=True)
class ClassicalCodec:
    """A classical image codec with an integer quality knob in ``[min_quality, max_quality]``."""

    name: str
    _encode: Callable[[np.ndarray, int], bytes] = field(repr=False)
    _decode: Callable[[bytes], np.ndarray] = field(repr=False)
    default_qualities: tuple[int, ...]
    min_quality: int = 0
    max_quality: int = 100
    description: str = ""

    def encode(self, rgb: np.ndarray, quality: int) -> bytes:
        """Encode an HxWx3 uint8 image at ``quality`` (clamped to the codec's range)."""
        rgb = _as_rgb(rgb)
        q = int(min(max(int(quality), self.min_quality), self.max_quality))
        return self._encode(rgb, q)

    def decode(self, data: bytes) -> np.ndarray:
        """Decode bytes made by ``encode`` back to HxWx3 uint8; raises ImageError on bad bytes."""
        try:
            out = self._decode(bytes(data))
        except ImageError:
            raise
        except Exception as e:  # each library has its own exception types
            raise ImageError(f"{self.name}: cannot decode: {e}") from e
        return np.ascontiguousarray(out, dtype=np.uint8)

    def encode_at_bpp(self, rgb: np.ndarray, target_bpp: float, *, mode: str = "at_most") -> MatchedEncoding:
        """Encode at the quality whose rate best matches ``target_bpp`` (bisection on quality).

        ``mode="at_most"`` (default) returns the highest quality whose rate does not exceed the
        target, so the classical codec never gets more bits than the codec it is compared with;
        if even the lowest quality exceeds the target, the lowest quality is returned.
        ``mode="closest"`` returns the quality whose rate is nearest to the target. Assumes rate is
        non-decreasing in quality (true for these encoders up to a few bytes; ties are harmless).
        """
        if mode not in ("at_most", "closest"):
            raise ValueError(f"mode must be 'at_most' or 'closest', not {mode!r}")
        if not target_bpp > 0:
            raise ValueError(f"target_bpp must be positive, got {target_bpp}")
        rgb = _as_rgb(rgb)
        h, w = rgb.shape[:2]
        cache: dict[int, bytes] = {}

        def rate(q: int) -> float:
            if q not in cache:
                cache[q] = self.encode(rgb, q)
            return _bpp(len(cache[q]), h, w)

        lo, hi = self.min_quality, self.max_quality
        if rate(lo) > target_bpp:
            best = lo
        elif rate(hi) <= target_bpp:
            best = hi
        else:
            # invariant: rate(lo) <= target < rate(hi)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if rate(mid) <= target_bpp:
                    lo = mid
                else:
                    hi = mid
            best = lo
            if mode == "closest" and abs(rate(hi) - target_bpp) < abs(rate(lo) - target_bpp):
                best = hi
        return MatchedEncoding(quality=best, data=cache[best], bpp=rate(best))


def _as_rgb(rgb: np.ndarray) -> np.ndarray:
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ImageError(f"expected an HxWx3 uint8 RGB array, got shape {a.shape} dtype {a.dtype}")
    return np.ascontiguousarray(a)


def _pil_encode(fmt: str, **kw: object) -> Callable[[np.ndarray, int], bytes]:
    def enc(rgb: np.ndarray, quality: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(rgb, "RGB").save(buf, format=fmt, quality=quality, **kw)
        return buf.getvalue()

    return enc


def _pil_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return np.asarray(img.convert("RGB"))


def _jxl_encode(rgb: np.ndarray, quality: int) -> bytes:
    import imagecodecs

    # level = libjxl "quality" (JxlEncoderDistanceFromQuality); effort 7 is libjxl's default
    return bytes(imagecodecs.jpegxl_encode(rgb, level=quality, effort=7, numthreads=1))


def _jxl_decode(data: bytes) -> np.ndarray:
    import imagecodecs

    out = np.asarray(imagecodecs.jpegxl_decode(data, numthreads=1))
    if out.ndim == 2:
        out = np.repeat(out[:, :, None], 3, axis=2)
    return out[:, :, :3]


def _avif_available() -> bool:
    from PIL import features

    return bool(features.check("avif"))


BASELINES: dict[str, ClassicalCodec] = {
    c.name: c
    for c in (
        ClassicalCodec(
            name="jpeg",
            _encode=_pil_encode("JPEG", subsampling=2, optimize=False),
            _decode=_pil_decode,
            default_qualities=(5, 10, 20, 30, 40, 50, 65, 75, 85),
            min_quality=1,
            max_quality=100,
            description="JPEG, Pillow/libjpeg-turbo, 4:2:0, baseline Huffman (Pillow defaults)",
        ),
        ClassicalCodec(
            name="webp",
            _encode=_pil_encode("WEBP", method=4, lossless=False),
            _decode=_pil_decode,
            default_qualities=(0, 5, 15, 30, 50, 70, 80, 90),
            description="WebP, Pillow/libwebp, lossy, method=4 (default)",
        ),
        ClassicalCodec(
            name="avif",
            _encode=_pil_encode("AVIF", speed=6, subsampling="4:2:0", max_threads=1),
            _decode=_pil_decode,
            default_qualities=(0, 10, 20, 30, 40, 50, 60, 70),
            description="AVIF, Pillow/libavif+aom, 4:2:0 8-bit, speed=6 (Pillow default)",
        ),
        ClassicalCodec(
            name="jpegxl",
            _encode=_jxl_encode,
            _decode=_jxl_decode,
            default_qualities=(5, 15, 30, 45, 60, 75, 85, 90),
            min_quality=1,
            max_quality=100,
            description="JPEG XL, imagecodecs/libjxl, VarDCT, effort=7 (default)",
        ),
    )
}

#: Other spellings accepted by ``get_baseline``.
_ALIASES = {"jpg": "jpeg", "jxl": "jpegxl", "jpeg-xl": "jpegxl", "jpeg_xl": "jpegxl"}


def baseline_names() -> list[str]:
    """Names of the classical codecs that work in this environment."""
    return [n for n in BASELINES if n != "avif" or _avif_available()]


def get_baseline(name: str) -> ClassicalCodec:
    """Look a classical codec up by name (``jpeg``, ``webp``, ``avif``, ``jpegxl``/``jxl``)."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in BASELINES:
        raise ValueError(f"unknown baseline codec {name!r}; known: {', '.join(BASELINES)}")
    if key == "avif" and not _avif_available():
        raise ValueError("AVIF is not available in this Pillow build")
    return BASELINES[key]


def library_versions(names: Sequence[str] | None = None) -> dict[str, str]:
    """Library versions behind each baseline, for results files (what was measured matters)."""
    import PIL
    from PIL import features

    out: dict[str, str] = {"pillow": PIL.__version__}
    names = list(names) if names is not None else list(BASELINES)
    if "jpeg" in names:
        out["libjpeg-turbo"] = str(features.version("libjpeg_turbo"))
    if "webp" in names:
        out["libwebp"] = str(features.version("webp"))
    if "avif" in names and _avif_available():
        out["libavif"] = str(features.version("avif"))
        try:
            from PIL import _avif

            out["avif-codecs"] = str(_avif.codec_versions())
        except Exception:  # pragma: no cover - informational only
            pass
    if "jpegxl" in names:
        import imagecodecs

        out["imagecodecs"] = imagecodecs.__version__
        libs = dict(x.split("-", 1) for x in imagecodecs.version().split(", ") if "-" in x)
        out["libjxl"] = libs.get("libjxl", "unknown")
    return out
