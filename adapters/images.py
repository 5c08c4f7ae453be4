"""Safe image loading: any common raster file to an upright 8-bit RGB ``PIL.Image``.

Every failure (missing, empty, not an image, truncated, decompression bomb, unsupported mode)
is an :class:`ImageError` whose message names the file. Only well-known raster formats are
tried, so no plugin that shells out (EPS via Ghostscript, for example) is ever reached.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = ["ImageError", "load_rgb", "DEFAULT_MAX_PIXELS", "ALLOWED_FORMATS", "open_image"]

#: Pillow's own default bomb limit (about 89.5 megapixels).
DEFAULT_MAX_PIXELS = 89_478_485

_WANTED_FORMATS = (
    "JPEG", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "PPM", "TGA", "AVIF", "JPEG2000", "QOI", "HEIF",
)


def _register_heif() -> bool:
    """Teach Pillow HEIC/HEIF (iPhone photos) through ``pillow-heif``, when it is installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


HEIF_SUPPORTED = _register_heif()


class ImageError(ValueError):
    """An image file that cannot be used; the message names the file and the problem."""


def _allowed_formats() -> tuple[str, ...]:
    Image.init()
    return tuple(f for f in _WANTED_FORMATS if f in Image.OPEN)


ALLOWED_FORMATS = _allowed_formats()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def open_image(path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open ``path`` lazily (header only) after checking it exists, is non-empty and not a bomb.

    ``max_pixels=None`` (for metadata-only reads) skips the pixel limit and Pillow's bomb warning;
    Pillow's hard limit (twice ``Image.MAX_IMAGE_PIXELS``) still applies. The caller must close
    the returned image. Raises :class:`ImageError`.
    """
    p = Path(path)
    if max_pixels is not None and max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise ImageError(f"{p}: file not found") from None
    except OSError as exc:
        raise ImageError(f"{p}: cannot access file ({_describe(exc)})") from None
    if not p.is_file():
        raise ImageError(f"{p}: not a regular file")
    try:  # pseudo-files (/proc, /dev) and files over MAX_IMAGE_BYTES: refused before any read
        from adapters.files import MAX_IMAGE_BYTES, check_regular_file

        check_regular_file(p, max_bytes=MAX_IMAGE_BYTES, what="an image file")
    except ValueError as exc:
        raise ImageError(str(exc)) from None
    if size == 0:
        raise ImageError(f"{p}: empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("error" if max_pixels else "ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(p, formats=ALLOWED_FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(f"{p}: rejected as a decompression bomb ({_describe(exc)})") from None
        except Image.UnidentifiedImageError:
            raise ImageError(
                f"{p}: not a recognised image (expected one of {', '.join(ALLOWED_FORMATS)})"
            ) from None
        except Exception as exc:  # noqa: BLE001 - any parser failure means "unreadable"
            raise ImageError(f"{p}: unreadable image header ({_describe(exc)})") from None
    width, height = im.size
    if width <= 0 or height <= 0:
        im.close()
        raise ImageError(f"{p}: image has no pixels ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        im.close()
        raise ImageError(
            f"{p}: rejected as a decompression bomb ({width}x{height} = {width * height} pixels "
            f"exceeds the limit of {max_pixels})"
        )
    return im


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; an unreadable orientation tag leaves the image as stored."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - malformed EXIF must not cost a decodable image
        return im
    return im if out is None else out


def _high_bit_to_l(im: Image.Image) -> Image.Image:
    """Map 16/32-bit integer and float greyscale to 8-bit ``L`` without changing the contrast."""
    arr = np.asarray(im)
    if im.mode.startswith("I;16"):
        arr8 = arr.astype(np.float64) / 257.0
    elif im.mode == "F":
        arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        arr8 = arr * 255.0 if arr.size and arr.max() <= 1.0 else arr
    else:  # "I": 32-bit ints, usually a 16-bit PNG or TIFF widened by Pillow
        arr = arr.astype(np.float64)
        arr8 = arr / 257.0 if arr.size and arr.max() > 255 else arr
    return Image.fromarray(np.clip(np.rint(arr8), 0, 255).astype(np.uint8))


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
    elif mode == "PA":
        im, mode = im.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "I" or mode == "F" or mode.startswith("I;16"):
        return _high_bit_to_l(im).convert("RGB")
    if mode == "1" and "transparency" in im.info:  # rare: 1-bit with a transparent colour
        return im.convert("L").convert("RGB")
    return im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, ...


def load_rgb(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``path`` into an upright 8-bit RGB image, fully loaded and detached from the file.

    Alpha (RGBA, LA, palette transparency) is composited on white; greyscale, palette, CMYK and
    16/32-bit images are converted; multi-frame files give their first frame. Images with more
    than ``max_pixels`` pixels are rejected, and so is anything that trips Pillow's own
    decompression-bomb warning. Raises :class:`ImageError` naming ``path`` on any failure.
    """
    p = Path(path)
    im = open_image(p, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                im.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise ImageError(f"{p}: rejected as a decompression bomb ({_describe(exc)})") from None
            except Exception as exc:  # noqa: BLE001
                reason = _describe(exc)
                if "truncated" in reason.lower():
                    raise ImageError(f"{p}: truncated image data ({reason})") from None
                raise ImageError(f"{p}: cannot decode image data ({reason})") from None
        try:
            out = _to_rgb(_upright(im))
            if out is im:
                out = im.copy()
        except Exception as exc:  # noqa: BLE001
            raise ImageError(f"{p}: cannot convert {im.mode} image to RGB ({_describe(exc)})") from None
    finally:
        im.close()
    return out
