"""Decode one image safely and normalise it to a uint8 array.

Policy (documented in the README):

* Pillow's decompression-bomb guard is enforced: an image with more pixels than
  ``max_pixels`` is quarantined as ``too_large`` without being decoded.
* Only formats in the allow-list are decoded (``format_not_allowed`` otherwise).
* EXIF orientation is applied, then the mode is normalised:
  ``1``/``L`` stay grey; 16-bit and 32-bit integer grey (``I;16``, ``I``) are
  scaled by 1/257 (0–65535 → 0–255); float grey (``F``) is clipped to 0–255;
  palette images are expanded (to RGBA when they declare transparency);
  ``CMYK``/``YCbCr``/``LAB``/``HSV`` are converted to RGB by Pillow; any alpha
  channel is composited onto a solid ``alpha_background`` grey level.
* The result is ``H×W`` grey or ``H×W×3`` RGB uint8; the caller chooses the
  output channels and size.
"""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from memclean.schema import Reason

log = logging.getLogger(__name__)

#: Formats decoded by default (Pillow format names).
DEFAULT_ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")

#: File extensions treated as images when walking a folder.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"}
)

GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


@dataclass(frozen=True)
class ImageHeader:
    """What can be known about an image without decoding its pixels."""

    width: int
    height: int
    mode: str
    format: str


@dataclass(frozen=True)
class Decoded:
    """A decoded, mode-normalised image."""

    pixels: np.ndarray  #: H×W (grey) or H×W×3 (RGB) uint8
    orig_mode: str
    format: str

    @property
    def is_grey(self) -> bool:
        return self.pixels.ndim == 2


class DecodeError(Exception):
    """An image could not be used; ``reason`` is a :class:`Reason`."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _open(data: bytes, max_pixels: int, allowed: frozenset[str]) -> Image.Image:
    if len(data) == 0:
        raise DecodeError(Reason.NOT_AN_IMAGE, "empty file")
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                img = Image.open(io.BytesIO(data))
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise DecodeError(Reason.TOO_LARGE, str(exc)) from None
            except UnidentifiedImageError:
                raise DecodeError(Reason.NOT_AN_IMAGE, "unrecognised image signature") from None
            except (OSError, SyntaxError, ValueError, EOFError) as exc:
                raise DecodeError(_classify(exc), f"header: {exc}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    fmt = (img.format or "").upper()
    if fmt not in allowed:
        raise DecodeError(Reason.FORMAT_NOT_ALLOWED, f"format {fmt or 'unknown'} is not allowed")
    w, h = img.size
    if w <= 0 or h <= 0:
        raise DecodeError(Reason.UNREADABLE, f"degenerate size {w}x{h}")
    if w * h > max_pixels:
        raise DecodeError(Reason.TOO_LARGE, f"{w}x{h} = {w * h} pixels > limit {max_pixels}")
    return img


def _classify(exc: BaseException) -> Reason:
    text = str(exc).lower()
    if isinstance(exc, EOFError) or "truncated" in text or "broken data stream" in text or "premature end" in text:
        return Reason.TRUNCATED
    return Reason.UNREADABLE


def read_header(
    data: bytes,
    max_pixels: int,
    allowed_formats: frozenset[str] = frozenset(DEFAULT_ALLOWED_FORMATS),
) -> ImageHeader:
    """Read size and mode without decoding pixels; EXIF rotation is accounted for.

    Raises
    ------
    DecodeError
        When the bytes are not an allowed, reasonably sized image.
    """
    img = _open(data, max_pixels, allowed_formats)
    w, h = img.size
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:
        orientation = 1
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    return ImageHeader(w, h, img.mode, (img.format or "").upper())


def decode(
    data: bytes,
    max_pixels: int,
    allowed_formats: frozenset[str] = frozenset(DEFAULT_ALLOWED_FORMATS),
    alpha_background: int = 255,
) -> Decoded:
    """Decode image bytes into a grey or RGB uint8 array following the module policy.

    Parameters
    ----------
    data
        The encoded file.
    max_pixels
        Decompression-bomb limit (width × height).
    allowed_formats
        Pillow format names to accept.
    alpha_background
        Grey level (0–255) that transparent pixels are composited onto.

    Raises
    ------
    DecodeError
        With the reason code for the quarantine row.
    """
    img = _open(data, max_pixels, allowed_formats)
    fmt = (img.format or "").upper()
    orig_mode = img.mode
    try:
        img.load()
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)
        img = ImageOps.exif_transpose(img)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(_classify(exc), f"decode: {exc}") from None
    return Decoded(_normalise(img, alpha_background), orig_mode, fmt)


def _normalise(img: Image.Image, alpha_background: int) -> np.ndarray:
    mode = img.mode
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA" if ("transparency" in img.info or mode == "PA") else "RGB")
        mode = img.mode
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        arr = np.asarray(img).astype(np.float64)
        return np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8)
    if mode == "F":
        return np.clip(np.rint(np.asarray(img, dtype=np.float64)), 0, 255).astype(np.uint8)
    if mode == "1":
        return np.asarray(img.convert("L"), dtype=np.uint8)
    if mode == "L":
        return np.asarray(img, dtype=np.uint8)
    if mode in ("LA", "La"):
        arr = np.asarray(img.convert("LA"), dtype=np.float64)
        return _composite(arr[..., :1], arr[..., 1:], alpha_background)[..., 0]
    if mode in ("RGBA", "RGBa"):
        arr = np.asarray(img.convert("RGBA"), dtype=np.float64)
        return _composite(arr[..., :3], arr[..., 3:], alpha_background)
    if mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def _composite(colour: np.ndarray, alpha: np.ndarray, background: int) -> np.ndarray:
    a = alpha / 255.0
    out = colour * a + float(background) * (1.0 - a)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """Return ``pixels`` as H×W×C uint8 with ``channels`` 1 (luma) or 3 (RGB)."""
    if channels == 1:
        if pixels.ndim == 2:
            return pixels[..., None]
        return np.asarray(Image.fromarray(pixels, "RGB").convert("L"), dtype=np.uint8)[..., None]
    if channels == 3:
        if pixels.ndim == 2:
            return np.repeat(pixels[..., None], 3, axis=2)
        return pixels
    raise ValueError(f"channels must be 1 or 3, got {channels}")


def resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize H×W×C uint8 to ``height``×``width`` (Lanczos, aspect not kept)."""
    if pixels.shape[0] == height and pixels.shape[1] == width:
        return pixels
    c = pixels.shape[2]
    img = Image.fromarray(pixels[..., 0] if c == 1 else pixels, "L" if c == 1 else "RGB")
    out = np.asarray(img.resize((width, height), Image.Resampling.LANCZOS), dtype=np.uint8)
    return out[..., None] if c == 1 else out


def pixel_digest(pixels: np.ndarray) -> str:
    """SHA-256 of a decoded array, its shape included (exact-duplicate key)."""
    h = hashlib.sha256(repr(pixels.shape).encode())
    h.update(np.ascontiguousarray(pixels).tobytes())
    return h.hexdigest()
