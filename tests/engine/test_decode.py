"""decode_image on the awkward real-world inputs (tests/images/edge) and on formats made with Pillow."""

from __future__ import annotations

import contextlib
import io
import json
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageFile, TiffImagePlugin

from visio_grpc.domain.errors import (
    ImageCorrupt,
    ImageEmpty,
    ImageNotRecognized,
    ImageTooLarge,
    ImageTooManyPixels,
    ImageUnsupportedFormat,
    VisioError,
)
from visio_grpc.domain.models import ImageSize
from visio_grpc.engine.decode import DRAFT_SLACK, DecodedImage, DecodeLimits, check_upload, decode_image, sniff_format

EDGE = Path(__file__).resolve().parents[1] / "images" / "edge"
REPO = Path(__file__).resolve().parents[2]
LIMITS = DecodeLimits()
UPRIGHT = ImageSize(512, 640)  # every edge photo is 00_reference.jpg, 512x640 upright
Pixels = npt.NDArray[np.uint8]


def edge(name: str) -> bytes:
    return (EDGE / name).read_bytes()


def decode(data: bytes, **kwargs: object) -> DecodedImage:
    return decode_image(data, field="face", limits=kwargs.pop("limits", LIMITS), **kwargs)  # type: ignore[arg-type]


def mad(a: npt.NDArray[np.generic], b: npt.NDArray[np.generic]) -> float:
    """Mean absolute difference in 8-bit levels."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.int32) - b.astype(np.int32)).mean())


@pytest.fixture(scope="module")
def reference() -> Image.Image:
    with Image.open(EDGE / "00_reference.jpg") as img:
        img.load()
        return img.copy()


@pytest.fixture(scope="module")
def ref_rgb(reference: Image.Image) -> Pixels:
    return np.asarray(reference)


@pytest.fixture(scope="module")
def ref_gray(reference: Image.Image) -> Pixels:
    return np.asarray(reference.convert("L"))


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **params)
    return out.getvalue()


def assert_contract(result: DecodedImage) -> None:
    """What dlib needs: H x W x 3 uint8, C-contiguous, and a consistent scale."""
    assert result.pixels.dtype == np.uint8
    assert result.pixels.ndim == 3 and result.pixels.shape[2] == 3
    assert result.pixels.flags.c_contiguous
    assert result.scale == pytest.approx(result.pixels.shape[1] / result.size.width)


# --- the edge inputs ----------------------------------------------------------------------------


def test_reference_decodes_at_full_size(ref_rgb: Pixels) -> None:
    result = decode(edge("00_reference.jpg"))
    assert_contract(result)
    assert (result.format, result.size, result.scale) == ("JPEG", UPRIGHT, 1.0)
    assert mad(result.pixels, ref_rgb) == 0.0


@pytest.mark.parametrize(
    ("name", "fmt", "tolerance"),
    [
        ("exif_orient_6.jpg", "JPEG", 3.0),
        ("exif_orient_3.jpg", "JPEG", 3.0),
        ("progressive.jpg", "JPEG", 3.0),
        ("cmyk.jpg", "JPEG", 4.0),
        ("image.webp", "WEBP", 4.0),
        ("image.heic", "HEIF", 4.0),
        ("palette.png", "PNG", 6.0),
        ("png_named_as.jpg", "PNG", 4.0),
    ],
)
def test_colour_edge_inputs_match_the_reference(name: str, fmt: str, tolerance: float, ref_rgb: Pixels) -> None:
    result = decode(edge(name))
    assert_contract(result)
    assert (result.format, result.size, result.scale) == (fmt, UPRIGHT, 1.0)
    assert mad(result.pixels, ref_rgb) < tolerance


def test_exif_6_is_stored_sideways_and_returned_upright(ref_rgb: Pixels) -> None:
    with Image.open(EDGE / "exif_orient_6.jpg") as stored:
        assert stored.size == (640, 512)  # so the test fails if orientation were ignored
    result = decode(edge("exif_orient_6.jpg"))
    assert result.pixels.shape == (640, 512, 3)
    assert mad(result.pixels, ref_rgb) < 3.0


def test_exif_3_is_not_returned_upside_down(ref_rgb: Pixels) -> None:
    result = decode(edge("exif_orient_3.jpg"))
    assert mad(result.pixels, ref_rgb) < 3.0
    assert mad(result.pixels, ref_rgb[::-1, ::-1]) > 20.0


def test_adobe_cmyk_jpeg_is_not_inverted(ref_rgb: Pixels) -> None:
    result = decode(edge("cmyk.jpg"))
    assert mad(result.pixels, ref_rgb) < 4.0
    assert mad(result.pixels, 255 - ref_rgb) > 60.0


@pytest.mark.parametrize("name", ["gray.jpg", "gray16.png"])
def test_gray_inputs_are_replicated_to_rgb_and_not_clipped(name: str, ref_gray: Pixels) -> None:
    result = decode(edge(name))
    assert_contract(result)
    assert result.size == UPRIGHT
    red, green, blue = (result.pixels[..., i] for i in range(3))
    assert np.array_equal(red, green) and np.array_equal(green, blue)
    assert mad(red, ref_gray) < 3.0
    assert result.pixels.mean() < 200  # a 16-bit image clipped to 8 bits would be almost all white


def test_rgba_is_flattened_on_white(ref_rgb: Pixels) -> None:
    with Image.open(EDGE / "rgba.png") as img:
        alpha = np.asarray(img.getchannel("A"))
    result = decode(edge("rgba.png"))
    assert_contract(result)
    opaque, clear = alpha == 255, alpha == 0
    assert opaque.any() and clear.any()
    assert mad(result.pixels[opaque], ref_rgb[opaque]) < 3.0
    assert (result.pixels[clear] == 255).all()


@pytest.mark.parametrize(("name", "size"), [("two_faces.jpg", (1024, 640)), ("many_faces_12.jpg", (1024, 960))])
def test_multi_face_photos_decode(name: str, size: tuple[int, int]) -> None:
    result = decode(edge(name))
    assert_contract(result)
    assert result.size == ImageSize(*size)
    assert result.pixels.shape == (size[1], size[0], 3)


def test_empty_upload() -> None:
    with pytest.raises(ImageEmpty) as caught:
        decode(edge("empty.jpg"))
    assert caught.value.metadata == {"field": "face"}


def test_text_is_not_an_image() -> None:
    with pytest.raises(ImageNotRecognized) as caught:
        decode(edge("text_as.jpg"))
    assert "JPEG" in caught.value.metadata["accepted"]


@pytest.mark.parametrize(("name", "fmt"), [("truncated_60.jpg", "JPEG"), ("heic_stub.heic", "HEIF")])
def test_damaged_files_are_corrupt(name: str, fmt: str) -> None:
    with pytest.raises(ImageCorrupt) as caught:
        decode(edge(name))
    assert caught.value.metadata["detected_format"] == fmt
    assert caught.value.metadata["problem"]


def test_truncated_jpeg_problem_says_truncated() -> None:
    with pytest.raises(ImageCorrupt) as caught:
        decode(edge("truncated_60.jpg"))
    assert caught.value.metadata["problem"] == "data truncated"


def test_bomb_is_rejected_from_the_header_without_allocating() -> None:
    data = edge("bomb_60000.png")
    assert len(data) < 1024
    stats = Image.core.get_stats()
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ImageTooManyPixels) as caught:
            decode(data)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.metadata["width"] == "60000"
    assert caught.value.metadata["height"] == "60000"
    assert caught.value.metadata["max_pixels"] == str(LIMITS.max_pixels)
    assert elapsed < 1.0
    assert peak < 2 * 1024 * 1024
    # Pillow's own allocator counts every image it creates: none were.
    assert Image.core.get_stats()["new_count"] == stats["new_count"]


def test_pillows_own_bomb_limit_is_off() -> None:
    """Ours applies: Pillow's would raise DecompressionBombError from Image.open, before our check
    (the bomb test above also fails if it comes back: 3.6 Gpx is over twice Pillow's default)."""
    assert Image.MAX_IMAGE_PIXELS is None


def test_truncated_images_stay_errors() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# --- limits -------------------------------------------------------------------------------------


def test_too_many_bytes_is_rejected_before_decoding() -> None:
    with pytest.raises(ImageTooLarge) as caught:
        decode(edge("00_reference.jpg"), limits=DecodeLimits(max_image_bytes=1000))
    assert caught.value.metadata["size_bytes"] == str(len(edge("00_reference.jpg")))
    assert caught.value.metadata["max_bytes"] == "1000"


def test_empty_beats_every_other_check() -> None:
    with pytest.raises(ImageEmpty):
        decode(b"", limits=DecodeLimits(max_image_bytes=0, max_pixels=0))


def test_pixel_limit_is_ours() -> None:
    with pytest.raises(ImageTooManyPixels) as caught:
        decode(edge("00_reference.jpg"), limits=DecodeLimits(max_pixels=512 * 640 - 1))
    assert (caught.value.metadata["width"], caught.value.metadata["height"]) == ("512", "640")
    decode(edge("00_reference.jpg"), limits=DecodeLimits(max_pixels=512 * 640))


def test_check_upload_returns_the_format_without_decoding() -> None:
    assert check_upload(edge("png_named_as.jpg"), field="face", limits=LIMITS) == "PNG"
    with pytest.raises(ImageUnsupportedFormat):
        check_upload(b"8BPS\x00\x01" + bytes(40), field="face", limits=LIMITS)


# --- formats made here --------------------------------------------------------------------------


def _png16_rgb(values: npt.NDArray[np.uint16]) -> bytes:
    """A 16-bit RGB PNG written by hand: Pillow cannot save one."""
    height, width, _ = values.shape
    raw = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


Maker = Callable[[Image.Image], bytes]
SYNTHETIC_COLOUR: list[tuple[str, str, Maker, float]] = [
    ("bmp", "BMP", lambda im: encode(im, "BMP"), 0.5),
    ("gif", "GIF", lambda im: encode(im, "GIF"), 6.0),
    ("tiff", "TIFF", lambda im: encode(im, "TIFF"), 0.5),
    ("tiff-lzw", "TIFF", lambda im: encode(im, "TIFF", compression="tiff_lzw"), 0.5),
    ("tiff-cmyk", "TIFF", lambda im: encode(im.convert("CMYK"), "TIFF"), 1.0),
    ("tiff-lab", "TIFF", lambda im: encode(im.convert("LAB"), "TIFF"), 2.0),
    ("webp-lossless", "WEBP", lambda im: encode(im, "WEBP", lossless=True), 0.5),
    ("avif", "AVIF", lambda im: encode(im, "AVIF", quality=90), 3.0),
    ("heic", "HEIF", lambda im: encode(im, "HEIF", quality=90), 3.0),
    ("png-16bit-rgb", "PNG", lambda im: _png16_rgb(np.asarray(im).astype(np.uint16) * 257), 0.0),
    ("jpeg-with-junk", "JPEG", lambda im: encode(im, "JPEG", quality=95) + b"\x00junk after EOI" * 500, 2.0),
    ("mpo-style-jpeg-padding", "JPEG", lambda im: encode(im, "JPEG", quality=95) + bytes(4096), 2.0),
]


@pytest.mark.parametrize(("label", "fmt", "make", "tolerance"), SYNTHETIC_COLOUR, ids=[c[0] for c in SYNTHETIC_COLOUR])
def test_synthetic_colour_formats(
    label: str, fmt: str, make: Maker, tolerance: float, reference: Image.Image, ref_rgb: Pixels
) -> None:
    result = decode(make(reference))
    assert_contract(result)
    assert (result.format, result.size) == (fmt, UPRIGHT)
    assert mad(result.pixels, ref_rgb) <= tolerance


SYNTHETIC_GRAY: list[tuple[str, Maker]] = [
    ("png-LA", lambda im: encode(im.convert("LA"), "PNG")),
    ("png-I16", lambda im: encode(Image.fromarray(np.asarray(im.convert("L")).astype(np.uint16) * 257), "PNG")),
    ("tiff-I32", lambda im: encode(Image.fromarray(np.asarray(im.convert("L")).astype(np.int32) * 257), "TIFF")),
    ("tiff-F-unit", lambda im: encode(Image.fromarray(np.asarray(im.convert("L")).astype(np.float32) / 255), "TIFF")),
    ("tiff-1bit", lambda im: encode(im.convert("L").point(lambda v: 255 if v > 127 else 0).convert("1"), "TIFF")),
]


@pytest.mark.parametrize(("label", "make"), SYNTHETIC_GRAY, ids=[c[0] for c in SYNTHETIC_GRAY])
def test_synthetic_gray_modes_are_scaled_not_clipped(
    label: str, make: Maker, reference: Image.Image, ref_gray: Pixels
) -> None:
    result = decode(make(reference))
    assert_contract(result)
    assert result.size == UPRIGHT
    expected = ref_gray if label != "tiff-1bit" else np.where(ref_gray > 127, 255, 0).astype(np.uint8)
    assert mad(result.pixels[..., 1], expected) <= 1.0
    assert np.array_equal(result.pixels[..., 0], result.pixels[..., 2])


def test_palette_with_transparency_is_expanded_and_flattened(reference: Image.Image, ref_rgb: Pixels) -> None:
    palette = reference.quantize(256)
    indices = np.asarray(palette)
    clear_index = int(indices[0, 0])
    result = decode(encode(palette, "PNG", transparency=clear_index))
    clear = indices == clear_index
    assert 0 < clear.sum() < clear.size
    assert (result.pixels[clear] == 255).all()
    assert mad(result.pixels[~clear], ref_rgb[~clear]) < 6.0


def test_gif_gives_the_first_frame(reference: Image.Image, ref_rgb: Pixels) -> None:
    second = Image.new("RGB", reference.size, (0, 255, 0))
    data = encode(reference, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    result = decode(data)
    assert mad(result.pixels, ref_rgb) < 6.0


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


ROTATED: list[tuple[str, Maker]] = [
    ("jpeg", lambda im: encode(im, "JPEG", quality=95, exif=_exif(6))),
    ("png", lambda im: encode(im, "PNG", exif=_exif(6))),
    ("webp", lambda im: encode(im, "WEBP", quality=95, exif=_exif(6))),
    ("avif", lambda im: encode(im, "AVIF", quality=90, exif=_exif(6))),
    ("heic", lambda im: encode(im, "HEIF", quality=90, exif=_exif(6))),
    ("tiff", lambda im: encode(im, "TIFF", exif=_exif(6))),
    ("tiff-tag", lambda im: encode(im, "TIFF", tiffinfo=_tiff_orientation(6), compression="tiff_lzw")),
]


def _tiff_orientation(value: int) -> TiffImagePlugin.ImageFileDirectory_v2:
    ifd = TiffImagePlugin.ImageFileDirectory_v2()
    ifd[0x0112] = value
    return ifd


@pytest.mark.parametrize(("label", "make"), ROTATED, ids=[c[0] for c in ROTATED])
@pytest.mark.parametrize("max_side", [None, 200])
def test_orientation_6_in_every_format_is_applied_once(
    label: str, make: Maker, max_side: int | None, reference: Image.Image
) -> None:
    """Pillow's TIFF plugin and pillow-heif rotate by themselves: rotating again would be wrong."""
    stored = reference.transpose(Image.Transpose.ROTATE_90)  # what orientation 6 undoes
    result = decode(make(stored), max_side=max_side)
    assert_contract(result)
    assert result.size == UPRIGHT
    expected = reference.resize((result.pixels.shape[1], result.pixels.shape[0]), Image.Resampling.LANCZOS)
    assert mad(result.pixels, np.asarray(expected)) < 4.0


@pytest.mark.parametrize(
    ("label", "make", "detected"),
    [
        ("ico", lambda im: encode(im.resize((64, 64)), "ICO"), "ICO"),
        ("jpeg2000", lambda im: encode(im, "JPEG2000"), "JPEG 2000"),
        ("ppm", lambda im: encode(im, "PPM"), "PNM"),
        ("qoi", lambda im: encode(im, "QOI"), "QOI"),
        ("psd", lambda im: b"8BPS\x00\x01" + bytes(20), "PSD"),
        ("svg", lambda im: b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
    ],
)
def test_known_but_unsupported_formats_are_named(
    label: str, make: Maker, detected: str, reference: Image.Image
) -> None:
    with pytest.raises(ImageUnsupportedFormat) as caught:
        decode(make(reference))
    assert caught.value.metadata["detected_format"] == detected
    assert detected in caught.value.message


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2",  # MP4 video
        b"BMW is a car, not a bitmap",
        b"P1 is the first item of the plan",
        b'{"face": "base64..."}',
        bytes(100),
    ],
)
def test_other_bytes_are_not_recognised(data: bytes) -> None:
    assert sniff_format(data) is None
    with pytest.raises(ImageNotRecognized):
        decode(data)


@pytest.mark.parametrize(
    ("fmt", "cut"),
    [
        ("PNG", 0.6),
        ("WEBP", 0.6),
        ("HEIF", 0.6),
        ("AVIF", 0.6),
        ("GIF", 0.6),
        ("BMP", 0.6),
        ("TIFF", 0.6),
        ("JPEG", 0.99),
    ],
)
def test_truncated_files_are_corrupt_not_padded(fmt: str, cut: float, reference: Image.Image) -> None:
    data = encode(reference, fmt)
    with pytest.raises(ImageCorrupt) as caught:
        decode(data[: int(len(data) * cut)])
    assert caught.value.metadata["detected_format"] == fmt


# --- image data shorter than the header promises -------------------------------------------------
# Pillow 13 decodes a PNG whose zlib stream ends cleanly but early, padding the missing rows with
# black; a photo with its bottom missing must be refused like any other truncated upload.

_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_rows(pixels: npt.NDArray[np.generic], interlace: bool) -> list[bytes]:
    """The scanlines (filter byte 0 + samples) of an 8/16-bit gray or RGB array, in stream order."""
    big_endian = pixels.astype(">u2") if pixels.dtype == np.uint16 else pixels
    if not interlace:
        return [b"\x00" + row.tobytes() for row in big_endian]
    return [b"\x00" + row.tobytes() for x0, y0, dx, dy in _ADAM7 if big_endian[y0::dy, x0::dx].size for row in big_endian[y0::dy, x0::dx]]


def _png(
    pixels: npt.NDArray[np.generic],
    *,
    interlace: bool = False,
    rows: int | None = None,
    idat: bytes | None = None,
    trailer: bytes = b"",
) -> bytes:
    """A PNG written by hand from the first `rows` scanlines (all by default), or from `idat`."""
    height, width = pixels.shape[:2]
    bit_depth = 16 if pixels.dtype == np.uint16 else 8
    colour_type = 2 if pixels.ndim == 3 else 0
    if idat is None:
        idat = zlib.compress(b"".join(_png_rows(pixels, interlace)[:rows]))
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, int(interlace))
    body = _png_chunk(b"IDAT", idat) if idat else b""
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + body + _png_chunk(b"IEND", b"") + trailer


def _noise(shape: tuple[int, ...], dtype: type[np.generic] = np.uint8) -> npt.NDArray[np.generic]:
    """Never black, so rows padded with black would show."""
    high = 65535 if dtype is np.uint16 else 255
    return np.random.default_rng(7).integers(high // 4, high, shape, endpoint=True).astype(dtype)


SHORT_PNG: list[tuple[str, tuple[int, ...], type[np.generic], bool]] = [
    ("rgb8", (100, 100, 3), np.uint8, False),
    ("rgb8-interlaced", (100, 100, 3), np.uint8, True),
    ("gray16", (100, 100), np.uint16, False),
    ("gray16-interlaced", (37, 53), np.uint16, True),  # odd sizes: partial Adam7 blocks
]


@pytest.mark.parametrize(("label", "shape", "dtype", "interlace"), SHORT_PNG, ids=[c[0] for c in SHORT_PNG])
def test_png_with_a_short_but_clean_zlib_stream_is_corrupt(
    label: str, shape: tuple[int, ...], dtype: type[np.generic], interlace: bool
) -> None:
    pixels = _noise(shape, dtype)
    complete = decode(_png(pixels, interlace=interlace))  # the hand-made file is right when whole
    expected = pixels if dtype is np.uint8 else (pixels.astype(np.uint16) >> 8).astype(np.uint8)
    assert np.array_equal(complete.pixels[..., 0], expected if expected.ndim == 2 else expected[..., 0])
    scanlines = len(_png_rows(pixels, interlace))
    for rows in (10, scanlines - 1):  # interlaced: 10 rows end inside pass 3; all but the very last row
        with pytest.raises(ImageCorrupt) as caught:
            decode(_png(pixels, interlace=interlace, rows=rows))
        assert caught.value.metadata["detected_format"] == "PNG"
        assert caught.value.metadata["problem"] == "data truncated"


def test_png_with_a_zlib_stream_cut_mid_way_is_corrupt() -> None:
    pixels = _noise((100, 100, 3))
    stream = zlib.compress(b"".join(_png_rows(pixels, interlace=False)))
    with pytest.raises(ImageCorrupt) as caught:
        decode(_png(pixels, idat=stream[: len(stream) // 2]))
    assert caught.value.metadata["problem"] == "data truncated"


def test_png_with_damaged_zlib_data_is_corrupt() -> None:
    pixels = _noise((100, 100, 3))
    stream = bytearray(zlib.compress(b"".join(_png_rows(pixels, interlace=False))))
    stream[len(stream) // 3 : len(stream) // 3 + 16] = b"\xff" * 16
    with pytest.raises(ImageCorrupt):
        decode(_png(pixels, idat=bytes(stream)))


def test_png_without_idat_is_corrupt() -> None:
    with pytest.raises(ImageCorrupt) as caught:
        decode(_png(_noise((100, 100, 3)), idat=b""))
    assert caught.value.metadata["problem"] == "no image data"


@pytest.mark.parametrize("trailer", [b"junk after IEND" * 100, bytes(4096), b"\x00\x00\x00\x10IDAT" + bytes(64)])
def test_png_with_data_after_iend_still_decodes(trailer: bytes) -> None:
    pixels = _noise((64, 48, 3))
    result = decode(_png(pixels, trailer=trailer))
    assert np.array_equal(result.pixels, pixels)


def test_png_image_data_split_over_many_idat_chunks_decodes(reference: Image.Image, ref_rgb: Pixels) -> None:
    data = encode(reference, "PNG")  # Pillow writes 64 KB IDAT chunks
    assert data.count(b"IDAT") > 1
    assert mad(decode(data).pixels, ref_rgb) == 0.0


def test_apng_gives_the_first_frame_and_is_not_called_short(reference: Image.Image, ref_rgb: Pixels) -> None:
    second = Image.new("RGB", reference.size, (0, 255, 0))
    data = encode(reference, "PNG", save_all=True, append_images=[second], duration=100)
    assert b"fdAT" in data
    assert mad(decode(data).pixels, ref_rgb) == 0.0


def _zlib_zeros(megabytes: int) -> bytes:
    """A valid zlib stream of `megabytes` MB of zeros, built in ~0.1 s instead of compressing it all:
    after a full flush the compressor forgets its history, so every further MB compresses the same."""
    block = bytes(1 << 20)
    compressor = zlib.compressobj(9)
    first = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(megabytes):
        adler = zlib.adler32(block, adler)
    return first + again * (megabytes - 1) + b"\x03\x00" + struct.pack(">I", adler)  # empty final block


def test_png_zlib_bomb_is_inflated_only_as_far_as_the_image_needs() -> None:
    """An IDAT that would inflate to 256 MB for a 100x100 image: Pillow ignores the excess, and
    the length check must stop at the 30 KB the header implies, not inflate (or keep) the rest."""
    stream = _zlib_zeros(256)
    assert len(stream) < 300_000
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = decode(_png(_noise((100, 100, 3)), idat=stream))
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.pixels.shape == (100, 100, 3)
    assert elapsed < 0.5  # inflating all 256 MB takes well over a second
    assert peak < 4 * 1024 * 1024


def test_short_png_over_the_pixel_limit_is_too_many_pixels_first() -> None:
    data = _png(_noise((100, 100, 3)), rows=10)
    with pytest.raises(ImageTooManyPixels):
        decode(data, limits=DecodeLimits(max_pixels=100 * 100 - 1))


def _patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def _tiff_taller(data: bytes, height: int) -> bytes:
    """A little-endian TIFF re-labelled `height` rows tall (ImageLength and RowsPerStrip)."""
    out = bytearray(data)
    ifd = struct.unpack_from("<I", out, 4)[0]
    for i in range(struct.unpack_from("<H", out, ifd)[0]):
        entry = ifd + 2 + 12 * i
        tag, kind = struct.unpack_from("<HH", out, entry)
        if tag in (257, 278):
            struct.pack_into("<H" if kind == 3 else "<I", out, entry + 8, height)
    return bytes(out)


def _gif_taller(data: bytes, height: int) -> bytes:
    """A single-frame GIF with a global palette, screen and frame re-labelled `height` rows tall."""
    descriptor = 13 + 3 * (2 << (data[10] & 7))
    assert data[descriptor : descriptor + 1] == b","
    return _patched(_patched(data, 8, "<H", height), descriptor + 7, "<H", height)


# Checked by hand against Pillow 13: these already fail on data that ends (cleanly) too early.
SHORT_OTHER: list[tuple[str, str, Callable[[Image.Image], bytes]]] = [
    ("gif-early-lzw-end", "GIF", lambda im: _gif_taller(encode(im, "GIF"), 100)),
    ("bmp-short-pixel-array", "BMP", lambda im: _patched(encode(im, "BMP"), 22, "<i", 100)),
    ("tiff-raw-short-strip", "TIFF", lambda im: _tiff_taller(encode(im, "TIFF"), 100)),
    ("tiff-deflate-short-strip", "TIFF", lambda im: _tiff_taller(encode(im, "TIFF", compression="tiff_adobe_deflate"), 100)),
    ("tiff-lzw-short-strip", "TIFF", lambda im: _tiff_taller(encode(im, "TIFF", compression="tiff_lzw"), 100)),
]


@pytest.mark.parametrize(("label", "fmt", "make"), SHORT_OTHER, ids=[c[0] for c in SHORT_OTHER])
def test_other_formats_with_short_image_data_are_corrupt_not_padded(label: str, fmt: str, make: Callable[[Image.Image], bytes]) -> None:
    ten_rows = Image.fromarray(_noise((10, 100, 3)))  # its data, in a file that says 100 rows
    with pytest.raises(ImageCorrupt) as caught:
        decode(make(ten_rows))
    assert caught.value.metadata["detected_format"] == fmt


@pytest.mark.parametrize("offset", [20, 100, 400, 2000])
def test_flipped_header_bytes_never_escape_as_other_errors(offset: int) -> None:
    data = bytearray(edge("00_reference.jpg"))
    for i in range(offset, offset + 8):
        data[i] ^= 0xFF
    with contextlib.suppress(VisioError):
        decode(bytes(data))


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\xff\xd8\xff\xe0", "JPEG"),
        (b"\x89PNG\r\n\x1a\n", "PNG"),
        (b"GIF89a", "GIF"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "WEBP"),
        (b"II*\x00", "TIFF"),
        (b"MM\x00*", "TIFF"),
        (b"BM" + bytes(12) + b"\x28\x00\x00\x00", "BMP"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIF"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf", "AVIF"),
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1avif", "AVIF"),
        (b"\x00\x00\x00\x14ftypcrx \x00\x00\x00\x01crx ", "CR3"),
        (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
        (b"\xef\xbb\xbf  <svg width='1'/>", "SVG"),
        (b"8BPS\x00\x01", "PSD"),
    ],
)
def test_sniff_format(head: bytes, expected: str) -> None:
    assert sniff_format(head + bytes(32)) == expected


# --- max_side -----------------------------------------------------------------------------------


def assert_reduced_for(result: DecodedImage, max_side: int) -> tuple[int, int]:
    """At most max_side, at least DRAFT_SLACK of it (a JPEG may stop at its DCT scale), upright shape."""
    height, width = result.pixels.shape[:2]
    assert DRAFT_SLACK * max_side <= max(height, width) <= max_side
    assert width / height == pytest.approx(result.size.width / result.size.height, rel=0.02)
    assert result.scale == pytest.approx(width / result.size.width)
    return width, height


def test_max_side_on_a_sideways_jpeg_uses_the_upright_shape(reference: Image.Image) -> None:
    result = decode(edge("exif_orient_6.jpg"), max_side=100)
    assert_contract(result)
    assert result.size == UPRIGHT
    size = assert_reduced_for(result, 100)
    assert mad(result.pixels, np.asarray(reference.resize(size, Image.Resampling.LANCZOS))) < 4.0


@pytest.mark.parametrize("name", ["palette.png", "image.heic", "image.webp", "gray16.png", "cmyk.jpg"])
def test_max_side_for_other_inputs(name: str) -> None:
    result = decode(edge(name), max_side=320)
    assert_contract(result)
    assert result.size == UPRIGHT
    assert_reduced_for(result, 320)


def test_max_side_at_or_above_the_image_keeps_full_resolution() -> None:
    for max_side in (640, 5000):
        result = decode(edge("00_reference.jpg"), max_side=max_side)
        assert result.pixels.shape == (640, 512, 3)
        assert result.scale == 1.0


def test_max_side_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_side"):
        decode(edge("00_reference.jpg"), max_side=0)


@pytest.fixture(scope="module")
def large_jpeg(reference: Image.Image, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An equivalent of the shared large_6000.jpg (4800x6000), made here to keep the repo small."""
    path = tmp_path_factory.mktemp("large") / "large_4800x6000.jpg"
    reference.resize((4800, 6000), Image.Resampling.BICUBIC).save(path, "JPEG", quality=85)
    return path


def test_large_jpeg_downscaled_on_decode(large_jpeg: Path, reference: Image.Image) -> None:
    result = decode(large_jpeg.read_bytes(), max_side=1600)
    assert_contract(result)
    assert result.size == ImageSize(4800, 6000)
    size = assert_reduced_for(result, 1600)
    expected = reference.resize(size, Image.Resampling.BICUBIC)
    assert mad(result.pixels, np.asarray(expected)) < 3.0


_MEASURE = """
import json, sys, time
from visio_grpc.engine.decode import DecodeLimits, decode_image

def peak_rss():
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the (big) pytest parent.
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))

data = open(sys.argv[1], "rb").read()
max_side = None if sys.argv[2] == "none" else int(sys.argv[2])
before = peak_rss()
started = time.perf_counter()
result = decode_image(data, field="face", limits=DecodeLimits(), max_side=max_side)
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "peak_growth": peak_rss() - before, "shape": list(result.pixels.shape)}))
"""


def _measure(path: Path, max_side: int | None) -> dict[str, object]:
    """Peak RSS growth in a fresh process, so earlier tests' memory does not hide it."""
    completed = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path), "none" if max_side is None else str(max_side)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(completed.stdout)  # type: ignore[no-any-return]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc")
def test_large_jpeg_with_max_side_never_allocates_the_full_size_buffer(large_jpeg: Path) -> None:
    full_rgb = 4800 * 6000 * 3  # 86 MB; Pillow itself keeps 4 bytes per RGB pixel (115 MB)
    small = _measure(large_jpeg, 1600)
    full = _measure(large_jpeg, None)
    assert small["shape"] == [1500, 1200, 3]  # decoded at 1/4 scale, within DRAFT_SLACK of 1600: no resize
    assert full["shape"] == [6000, 4800, 3]
    assert small["peak_growth"] < full_rgb * 0.7  # type: ignore[operator]
    assert full["peak_growth"] > full_rgb  # type: ignore[operator]
    assert small["seconds"] < full["seconds"]  # type: ignore[operator]
