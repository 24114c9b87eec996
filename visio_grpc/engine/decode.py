"""Uploaded bytes to an upright 8-bit RGB array dlib can use, with every failure a domain error.

Real uploads are awkward: phones send HEIC and rotate with EXIF, editors save CMYK, 16-bit and
palette files, names and content types lie, and a 1 KB PNG can declare 3.6 billion pixels. This
module is the one place that turns such bytes into pixels, so the limits are enforced here.
"""

from __future__ import annotations

import io
import math
import re
import struct
import zlib
from collections.abc import Iterator
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
# PNG: samples per pixel for each IHDR colour type, with the bit depths the spec allows for it.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPES: dict[int, tuple[int, frozenset[int]]] = {
    0: (1, frozenset({1, 2, 4, 8, 16})),  # gray
    2: (3, frozenset({8, 16})),  # RGB
    3: (1, frozenset({1, 2, 4, 8})),  # palette
    4: (2, frozenset({8, 16})),  # gray + alpha
    6: (4, frozenset({8, 16})),  # RGBA
}
# Adam7 passes: (x start, y start, x step, y step).
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
# Chunks Pillow reads as one frame's image data once the first IDAT starts (load_read).
_PNG_DATA_CHUNKS = frozenset({b"IDAT", b"DDAT", b"fdAT"})
_INFLATE_IN = 64 * 1024  # compressed bytes per step: zlib copies the unconsumed tail each call
_INFLATE_OUT = 256 * 1024  # inflated bytes per step, thrown away: only their count matters

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
        if detected == "PNG":
            # Pillow 13 decodes a zlib stream that ends cleanly but early without complaint and
            # leaves the missing rows black; refuse it before any pixel buffer is allocated.
            problem = _png_data_problem(data)
            if problem is not None:
                raise ImageCorrupt(field, detected, problem)
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


# How far below the requested size a reduced-scale JPEG decode may land (see _load_rgb).
DRAFT_SLACK = 0.75


def _target_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """The stored-orientation size to return; the long side is the same whichever way is up."""
    if max_side is None or max(width, height) <= max_side:
        return width, height
    ratio = max_side / max(width, height)
    return max(1, round(width * ratio)), max(1, round(height * ratio))


def _load_rgb(img: Image.Image, target: tuple[int, int]) -> Image.Image:
    """Decode (at reduced DCT scale when that is close enough), convert to RGB, shrink to `target`.

    The result is at most `target`, and at least DRAFT_SLACK of it: a JPEG 1.8x the target then
    decodes at 1/2 scale and needs no resize at all (measured: a 4352 px photo for a 2400 px target
    went from ~390 ms of full decode + LANCZOS to ~70 ms).
    """
    if target != img.size:
        # JPEG decodes at 1/2, 1/4 or 1/8 scale, never below the requested size: faster and the
        # full-size buffer is never allocated. Other plugins ignore draft (HEIF may use a thumbnail).
        img.draft("RGB", (math.ceil(target[0] * DRAFT_SLACK), math.ceil(target[1] * DRAFT_SLACK)))
    img.load()
    rgb = _to_rgb(img)
    if rgb.size[0] > target[0] or rgb.size[1] > target[1]:
        # reducing_gap box-reduces by an integer factor first; bilinear finishes it. The detector
        # and the 150 px face chip gain nothing from a slower filter here.
        rgb = rgb.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)
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
    if "decompressed data too large" in text.lower():
        return "a metadata (text) chunk decompresses to more than Pillow's safety limit"
    if not text:
        return type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


# --- PNG image data check ---------------------------------------------------------------------


def _png_data_problem(data: bytes) -> str | None:
    """Why the first frame's image data cannot fill the image, or None when it can (or we cannot tell).

    Inflates the IDAT run in bounded steps, discarding the output, and stops once the exact raw
    size the header implies is reached, so a zlib bomb costs no more than a real image would.
    Header and chunk oddities are left to Pillow (None): this only catches data that is short.
    """
    header = _png_header(data)
    if header is None:
        return None
    width, height, bit_depth, colour_type, interlace = header
    expected = _png_raw_size(width, height, _PNG_COLOUR_TYPES[colour_type][0] * bit_depth, interlace)
    inflater = zlib.decompressobj()
    produced = 0
    seen_data = False
    try:
        for piece in _png_image_data(data):
            seen_data = True
            pending: bytes | memoryview = piece
            while True:
                out = inflater.decompress(pending, _INFLATE_OUT)
                produced += len(out)
                if produced >= expected:
                    return None
                if inflater.eof:
                    return "data truncated"  # the stream ended cleanly, but too early
                pending = inflater.unconsumed_tail
                if not pending and len(out) < _INFLATE_OUT:
                    break  # this piece is used up and no output is held back: next piece
    except zlib.error:
        return "image data corrupt"
    return "data truncated" if seen_data else "no image data"


def _png_header(data: bytes) -> tuple[int, int, int, int, int] | None:
    """IHDR (width, height, bit depth, colour type, interlace) when it is the first chunk and valid."""
    if len(data) < 33 or not data.startswith(_PNG_SIGNATURE) or data[8:16] != b"\x00\x00\x00\x0dIHDR":
        return None
    width, height, bit_depth, colour_type, _, _, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    known = _PNG_COLOUR_TYPES.get(colour_type)
    if known is None or bit_depth not in known[1] or interlace not in (0, 1) or width == 0 or height == 0:
        return None
    return width, height, bit_depth, colour_type, interlace


def _png_raw_size(width: int, height: int, bits_per_pixel: int, interlace: int) -> int:
    """Bytes the inflated image data must hold: each (sub-image) row is a filter byte plus pixels."""
    if not interlace:
        return height * (1 + (width * bits_per_pixel + 7) // 8)
    total = 0
    for x0, y0, dx, dy in _ADAM7:
        pass_width = (width - x0 + dx - 1) // dx if width > x0 else 0
        pass_height = (height - y0 + dy - 1) // dy if height > y0 else 0
        if pass_width and pass_height:  # an empty pass has no rows, not even filter bytes
            total += pass_height * (1 + (pass_width * bits_per_pixel + 7) // 8)
    return total


def _png_image_data(data: bytes) -> Iterator[memoryview]:
    """The first frame's compressed data in small slices, as Pillow reads it: the run of data
    chunks starting at the first IDAT (an APNG's later frames are not read). Chunks cut off by
    the end of the file give what is there; anything after the run (IEND, junk) is ignored."""
    view = memoryview(data)
    pos = len(_PNG_SIGNATURE)
    in_run = False
    while pos + 8 <= len(data):
        kind = data[pos + 4 : pos + 8]
        body_end = pos + 8 + int.from_bytes(data[pos : pos + 4], "big")
        if kind == b"IDAT" or (in_run and kind in _PNG_DATA_CHUNKS):
            in_run = True
            start = pos + 8 + (4 if kind == b"fdAT" else 0)  # fdAT starts with a sequence number
            end = min(body_end, len(data))
            for offset in range(start, end, _INFLATE_IN):
                yield view[offset : min(offset + _INFLATE_IN, end)]
        elif in_run or kind == b"IEND":
            return
        pos = body_end + 4  # and the CRC


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
