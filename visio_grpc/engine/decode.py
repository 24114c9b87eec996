"""Uploaded bytes to an upright 8-bit RGB array dlib can use, with every failure a domain error.

Real uploads are awkward: phones send HEIC and rotate with EXIF, editors save CMYK, 16-bit and
palette files, names and content types lie, and a 1 KB PNG can declare 3.6 billion pixels. This
module is the one place that turns such bytes into pixels, so the limits are enforced here.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pillow_heif
from PIL import Image

from visio_grpc.domain.errors import (
    ImageCorrupt,
    ImageEmpty,
    ImageNotRecognized,
    ImageTooLarge,
    ImageTooManyPixels,
    ImageUnsupportedFormat,
)
from visio_grpc.domain.models import ImageSize

# pillow-heif 1.8.1 decodes HEIC/HEIF only (its libheif has no AVIF decoder); AVIF comes from
# Pillow's own AvifImagePlugin (Pillow >= 11.2). The HEIF plugin resets EXIF orientation to 1 after
# applying the container's rotation itself, so the EXIF step below stays correct for HEIF too.
pillow_heif.register_heif_opener()

# Our per-call DecodeLimits.max_pixels is the limit that applies. Pillow's global check would raise
# DecompressionBombError (or warn) from Image.open itself, before we see the size, and with a
# threshold that is not ours; decode_image checks the header size on every path instead.
Image.MAX_IMAGE_PIXELS = None

# Formats we decode, as sniff_format names them (the same as Pillow's plugin ids).
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF")

# Flattening alpha onto white matches what a viewer shows for a transparent photo background.
_BACKGROUND = (255, 255, 255)

# EXIF Orientation value -> the transpose that makes the stored pixels upright (as ImageOps does).
_ORIENTATION_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION_TAG = 0x0112

# ISO-BMFF (ftyp) brands. A generic 'mif1'/'msf1' file is HEIF unless an AVIF brand is present.
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"})
_BMFF_OTHER_IMAGE_BRANDS = {b"jxl ": "JPEG XL", b"crx ": "CR3", b"jp2 ": "JPEG 2000", b"jpx ": "JPEG 2000"}

# Signatures of image formats we recognise but do not decode (name shown to the caller).
_UNSUPPORTED_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"8BPS", "PSD"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"\x8aMNG\r\n\x1a\n", "MNG"),
    (b"\x8bJNG\r\n\x1a\n", "JNG"),
    (b"qoif", "QOI"),
    (b"DDS ", "DDS"),
    (b"icns", "ICNS"),
    (b"gimp xcf", "XCF"),
    (b"v/1\x01", "OpenEXR"),
    (b"#?RADIANCE", "HDR"),
    (b"#?RGBE", "HDR"),
    (b"%!PS", "EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"\x59\xa6\x6a\x95", "Sun raster"),
)
_BMP_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
_NETPBM = re.compile(rb"P[1-7]\s+(?:#[^\n]*\n\s*)*\d+\s")


class _UnsupportedMode(Exception):
    """A colour mode Pillow decodes but cannot turn into RGB (e.g. LAB)."""

    def __init__(self, mode: str) -> None:
        super().__init__(mode)
        self.mode = mode


@dataclass(frozen=True)
class DecodeLimits:
    """Per-upload limits, checked before any pixel buffer is allocated."""

    max_image_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 64_000_000


@dataclass(frozen=True)
class DecodedImage:
    """Upright 8-bit RGB pixels, possibly downscaled, and the full upright size they came from."""

    pixels: npt.NDArray[np.uint8]  # H x W x 3, uint8, C-contiguous, upright, RGB
    size: ImageSize  # the full upright size of the photo
    scale: float  # pixels width / size.width (1.0 = full resolution)
    format: str  # detected format, e.g. "JPEG", "PNG", "HEIF"


def sniff_format(data: bytes) -> str | None:
    """Name the image format from magic bytes alone: names and content types of uploads lie.

    Returns one of SUPPORTED_FORMATS, another format's name for images we recognise but do not
    decode (e.g. "PSD", "ICO", "JPEG 2000", "SVG"), or None when the bytes are no known image.
    """
    head = data[:64]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "TIFF"
    if _is_bmp(head):
        return "BMP"
    if head[4:8] == b"ftyp":
        return _sniff_bmff(data)
    for signature, name in _UNSUPPORTED_SIGNATURES:
        if head.startswith(signature):
            return name
    if head[:4] == b"FORM" and head[8:12] in (b"ILBM", b"PBM "):
        return "IFF"
    if _is_icon(head):
        return "ICO"
    if _is_netpbm(head):
        return "PNM"
    if _is_svg(data[:2048]):
        return "SVG"
    return None


def check_upload(data: bytes, *, field: str, limits: DecodeLimits) -> str:
    """The checks that need no decoding, so callers can refuse bad uploads before queueing them.

    Returns the sniffed (supported) format; raises ImageEmpty, ImageTooLarge, ImageNotRecognized
    or ImageUnsupportedFormat, in that order.
    """
    if not data:
        raise ImageEmpty(field)
    if len(data) > limits.max_image_bytes:
        raise ImageTooLarge(field, len(data), limits.max_image_bytes)
    detected = sniff_format(data)
    if detected is None:
        raise ImageNotRecognized(field)
    if detected not in SUPPORTED_FORMATS:
        raise ImageUnsupportedFormat(field, detected)
    return detected


def decode_image(data: bytes, *, field: str, limits: DecodeLimits, max_side: int | None = None) -> DecodedImage:
    """Decode an upload to upright RGB, downscaled so its longer side is at most `max_side`.

    Raises ImageEmpty, ImageTooLarge, ImageNotRecognized, ImageUnsupportedFormat,
    ImageTooManyPixels or ImageCorrupt; nothing else escapes for bad input.
    """
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be positive, got {max_side}")
    detected = check_upload(data, field=field, limits=limits)
    try:
        img = Image.open(io.BytesIO(data), formats=[detected])
        width, height = img.size  # from the header: Image.open has not decoded any pixels yet
    except Exception as exc:  # Pillow and its plugins raise many types for bad headers
        raise ImageCorrupt(field, detected, _problem(exc)) from exc

    with img:
        if width <= 0 or height <= 0:
            raise ImageCorrupt(field, detected, f"header declares a {width}x{height} image")
        if width * height > limits.max_pixels:
            raise ImageTooManyPixels(field, width, height, limits.max_pixels)
        # The long side is the same whichever way is up, so the target needs no orientation yet.
        target = _target_size(width, height, max_side)
        try:
            rgb = _load_rgb(img, target)
        except _UnsupportedMode as exc:
            raise ImageUnsupportedFormat(field, f"{detected} ({exc.mode} colour)") from exc
        except Exception as exc:
            raise ImageCorrupt(field, detected, _problem(exc)) from exc
        # Read after loading: Pillow's TIFF plugin and pillow-heif report the upright size and
        # rotate while loading, then drop the tag; JPEG, PNG, WebP and AVIF leave it to us.
        orientation = _orientation(img)

    upright = ImageSize(height, width) if orientation >= 5 else ImageSize(width, height)

    transpose = _ORIENTATION_TRANSPOSE.get(orientation)
    if transpose is not None:
        rgb = rgb.transpose(transpose)
    pixels = np.ascontiguousarray(np.asarray(rgb), dtype=np.uint8)
    if pixels.ndim != 3 or pixels.shape[2] != 3:  # guards the contract; _load_rgb always gives RGB
        raise ImageCorrupt(field, detected, f"decoded to an unexpected shape {pixels.shape}")
    scale = 1.0 if pixels.shape[1] == upright.width else pixels.shape[1] / upright.width
    return DecodedImage(pixels=pixels, size=upright, scale=scale, format=detected)


# --- decoding ---------------------------------------------------------------------------------


def _target_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """The stored-orientation size to return; the long side is the same whichever way is up."""
    if max_side is None or max(width, height) <= max_side:
        return width, height
    ratio = max_side / max(width, height)
    return max(1, round(width * ratio)), max(1, round(height * ratio))


def _load_rgb(img: Image.Image, target: tuple[int, int]) -> Image.Image:
    """Decode (at reduced DCT scale when that is enough), convert to RGB and resize to `target`."""
    if target != img.size:
        # JPEG decodes at 1/2, 1/4 or 1/8 scale, never below the requested size: faster and the
        # full-size buffer is never allocated. Other plugins ignore draft (HEIF may use a thumbnail).
        img.draft("RGB", target)
    img.load()
    rgb = _to_rgb(img)
    if rgb.size != target:
        # reducing_gap lets Pillow box-reduce by an integer factor first, then resample well.
        rgb = rgb.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return rgb


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without the classic mistakes dlib would inherit.

    Palette indices are never read as gray, 16-bit is scaled (not clipped to white), CMYK goes
    through Pillow's conversion (the JPEG plugin already undoes Adobe inversion), alpha is flattened.
    """
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode.startswith("I;16"):
        high = (np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8)
        return Image.fromarray(high, "L").convert("RGB")
    if mode in ("I", "F"):
        return Image.fromarray(_scale_to_8bit(np.asarray(img)), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("P", "L", "RGB", "1") and "transparency" in img.info):
        return _flatten(img.convert("RGBA"))
    try:
        return img.convert("RGB")
    except ValueError as exc:  # e.g. LAB TIFF: Pillow has no direct conversion
        raise _UnsupportedMode(mode) from exc


def _scale_to_8bit(values: npt.NDArray[np.generic]) -> npt.NDArray[np.uint8]:
    """Map 32-bit int or float samples to 0..255 by the range they evidently use."""
    arr = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    arr = np.clip(arr, 0.0, None)
    peak = float(arr.max()) if arr.size else 0.0
    if values.dtype.kind == "f" and peak <= 1.0:
        arr = arr * 255.0
    elif peak > 65535.0:
        arr = arr * (255.0 / peak)
    elif peak > 255.0:
        arr = arr / 257.0
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def _flatten(rgba: Image.Image) -> Image.Image:
    """Composite onto a plain background: transparent pixels keep arbitrary colour values."""
    background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _orientation(img: Image.Image) -> int:
    """EXIF orientation 1..8; broken EXIF in an otherwise good photo is ignored, not fatal."""
    try:
        value = img.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:  # malformed EXIF blocks raise assorted errors from Pillow's parser
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _problem(exc: BaseException) -> str:
    """A short, stable-enough description of why Pillow could not decode the bytes."""
    text = str(exc).strip()
    if isinstance(exc, (EOFError, struct.error)) or "truncated" in text.lower():
        return "data truncated"
    if isinstance(exc, Image.UnidentifiedImageError):
        return "header not understood"
    if not text:
        return type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


# --- sniffing helpers -------------------------------------------------------------------------


def _sniff_bmff(data: bytes) -> str | None:
    """ISO base media files (HEIF, AVIF, JPEG XL, CR3, MP4...) share 'ftyp'; brands tell them apart."""
    box_size = int.from_bytes(data[0:4], "big")
    end = min(len(data), box_size if 16 <= box_size <= 4096 else 64)
    major = data[8:12]
    brands = {major} | {data[i : i + 4] for i in range(16, end - 3, 4)}
    if major in _AVIF_BRANDS:
        return "AVIF"
    if major in _HEIF_BRANDS - {b"mif1", b"msf1"}:
        return "HEIF"
    if brands & _AVIF_BRANDS:
        return "AVIF"
    if brands & _HEIF_BRANDS:
        return "HEIF"
    for brand, name in _BMFF_OTHER_IMAGE_BRANDS.items():
        if brand in brands:
            return name
    return None  # MP4/QuickTime video and other ISO-BMFF files are not images


def _is_bmp(head: bytes) -> bool:
    """'BM' alone matches text; also require a known DIB header size."""
    if not head.startswith(b"BM") or len(head) < 18:
        return False
    return int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES


def _is_icon(head: bytes) -> bool:
    """ICO/CUR: reserved 0, type 1 or 2, a small non-zero image count."""
    if len(head) < 22 or head[0:2] != b"\x00\x00" or head[2:4] not in (b"\x01\x00", b"\x02\x00"):
        return False
    if head[9] != 0:  # the first directory entry's reserved byte
        return False
    return 0 < int.from_bytes(head[4:6], "little") <= 256


def _is_netpbm(head: bytes) -> bool:
    """PBM/PGM/PPM/PAM: 'P1'..'P7', whitespace or comments, then a number."""
    return _NETPBM.match(head) is not None


def _is_svg(head: bytes) -> bool:
    text = head.decode("latin-1").lstrip("\ufeff\xef\xbb\xbf \t\r\n").lower()
    return text.startswith("<svg") or (text.startswith(("<?xml", "<!doctype svg", "<!--")) and "<svg" in text)


__all__ = ["SUPPORTED_FORMATS", "DecodeLimits", "DecodedImage", "check_upload", "decode_image", "sniff_format"]
