"""Turning user image bytes into the RGB uint8 arrays the codec works on, and back.

One rule for every caller (CLI, Ray actors, eval), so that a photo compresses the same way
whichever path it takes:

* EXIF orientation is applied first (the pixels are stored as the viewer shows them).
* RGB 8-bit is used as is. Grayscale (L, LA, 1, I;16, I) is replicated to three channels;
  palette (P, PA) images are expanded; CMYK and YCbCr are converted with Pillow.
* Alpha (RGBA, LA, PA, transparency) is composited over white: raybb codes no alpha channel,
  and a white matte is what most viewers show. ``strict_alpha=True`` refuses instead.
* 16-bit inputs (I;16, I, RGB 16-bit PNG via "I;16" planes) are scaled to 8 bits (v >> 8);
  raybb is an 8-bit codec and says so.
* Images larger than ``max_pixels`` are refused (a decompression bomb, or more memory than a
  worker should take) with an ``ImageError`` that names the size. That limit is ours: Pillow's own
  bomb warning is silenced and its bomb error reported in the same words.
* Animated and multi-page files (GIF, APNG, WebP, TIFF...) keep their first frame only, and say so
  with an :class:`ImageWarning` (the CLI prints it, batch jobs put it in the manifest's ``warning``).
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from raybb.errors import ImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "ImageWarning",
    "decode_image",
    "load_image",
    "to_rgb_array",
    "encode_png",
]

#: 100 megapixels: a large camera raw developed to RGB; beyond that, refuse rather than OOM.
DEFAULT_MAX_PIXELS = 100_000_000

#: File suffixes (lower case) that raybb reads as images: the one list behind ``raybb compress
#: dir/``, ``raybb bucket compress``, ``raybb eval`` and the training data. Every one decodes here.
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".gif", ".jxl", ".avif",
)  # fmt: skip

try:  # registers JPEG XL with Pillow (a dependency); AVIF is built into Pillow >= 11.3
    import pillow_jxl  # noqa: F401
except ImportError:  # pragma: no cover - without the plugin .jxl files fail as unreadable images
    pass


class ImageWarning(UserWarning):
    """An image was read, but not all of it was kept (e.g. only the first frame of an animation)."""


def to_rgb_array(img: Image.Image, *, strict_alpha: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Apply the conversion rule above to an opened Pillow image; returns HxWx3 uint8."""
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageError(f"image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageError(f"image is {w}x{h} = {w * h} pixels, above the limit of {max_pixels}")
    try:
        if img.getexif().get(0x0112, 1) != 1:  # exif_transpose copies the image even when upright
            img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not lose the image: keep the stored orientation
        pass
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.int64)
        if mode == "I" and arr.max(initial=0) <= 255:
            a8 = np.clip(arr, 0, 255).astype(np.uint8)
        else:
            a8 = np.clip(arr >> 8, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(a8[:, :, None], 3, axis=2))
    if mode == "F":
        raise ImageError("floating-point images are not supported (raybb codes 8-bit RGB)")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        if strict_alpha:
            raise ImageError(f"image has an alpha channel (mode {mode}); raybb codes RGB only")
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    try:
        rgb = img if img.mode == "RGB" else img.convert("RGB")  # convert() would copy a 100 MP image
    except Exception as e:  # pragma: no cover - Pillow mode edge cases
        raise ImageError(f"cannot convert image mode {mode} to RGB: {e}") from e
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def decode_image(data: bytes, *, strict_alpha: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode encoded image bytes (PNG, JPEG, WebP, ...) into HxWx3 uint8, or raise ImageError.

    Warns (:class:`ImageWarning`) when only the first of several frames or pages is kept.
    """
    if not data:
        raise ImageError("empty file")
    # Pillow's own bomb check warns above ~89 MP and raises above twice that; the limit is ours.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageError(f"image is {w}x{h} = {w * h} pixels, above the limit of {max_pixels}")
                frames = _frame_count(img)
                img.load()
                rgb = to_rgb_array(img, strict_alpha=strict_alpha, max_pixels=max_pixels)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        m = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{m.group(1)} pixels" if m else "too many pixels"
        raise ImageError(f"image has {size}, above the limit of {max_pixels}") from e
    except UnidentifiedImageError as e:
        raise ImageError("cannot decode image: not a recognised image format (or the file is damaged)") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"cannot decode image: {_clean(e)}") from e
    if frames > 1:
        warnings.warn(
            f"image has {frames} frames (animated or multi-page): only the first was kept", ImageWarning, stacklevel=2
        )
    return rgb


def _frame_count(img: Image.Image) -> int:
    try:
        return int(getattr(img, "n_frames", 1) or 1)
    except Exception:  # noqa: BLE001 - counting frames of a damaged file: the first frame still decides
        return 1


def _clean(e: BaseException) -> str:
    """Pillow's message without the in-memory file's repr (``<_io.BytesIO object at 0x...>``)."""
    msg = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(e)).strip()
    return msg or type(e).__name__


def load_image(path: str | Path, **kw) -> np.ndarray:
    """Read and decode an image file from the local file system."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ImageError(f"cannot read {path}: {e}") from e
    return decode_image(data, **kw)


def encode_png(rgb: np.ndarray, compress_level: int = 6) -> bytes:
    """Lossless PNG of an HxWx3 uint8 array (what `raybb decompress` writes)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB").save(
        buf, format="PNG", compress_level=compress_level
    )
    return buf.getvalue()
