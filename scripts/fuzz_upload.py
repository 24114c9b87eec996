"""Fuzz the upload path (parse_form -> sniff_format -> decode_image) for a fixed time.

Inputs are real photos in every accepted format, mutated by Hypothesis (truncations, byte flips,
header edits, splices, junk) and wrapped in randomly damaged multipart framing. A finding is any
exception that is not a VisioError, an input slower than --input-seconds, or RSS above
--max-rss-mb. A hang inside C code is caught by faulthandler, which dumps stacks and exits.

    python scripts/fuzz_upload.py --seconds 60
"""

from __future__ import annotations

import argparse
import faulthandler
import io
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import psutil
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from visio_grpc.api.multipart import parse_form  # noqa: E402
from visio_grpc.domain.errors import VisioError  # noqa: E402
from visio_grpc.engine.decode import DecodeLimits, decode_image, sniff_format  # noqa: E402

EDGE = REPO / "tests" / "images" / "edge"
BOUNDARY = "fuzzBoundary0123456789"
# Lower than production so header edits that claim huge sizes are refused rather than decoded;
# what matters here is that refusing and decoding never crash, hang or balloon.
LIMITS = DecodeLimits(max_image_bytes=4 * 1024 * 1024, max_pixels=8_000_000)
INTERESTING_U32 = (0, 1, 0x7F, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


@dataclass
class Stats:
    inputs: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    worst_seconds: float = 0.0
    peak_rss: int = 0


def seeds() -> list[bytes]:
    """Small, valid images in every accepted format plus the awkward edge files."""
    out: list[bytes] = []
    with Image.open(EDGE / "00_reference.jpg") as ref:
        small = ref.convert("RGB").resize((48, 60))
    exif = Image.Exif()
    exif[0x0112] = 6
    variants: list[tuple[Image.Image, str, dict[str, object]]] = [
        (small, "JPEG", {"quality": 80, "exif": exif.tobytes()}),
        (small, "JPEG", {"progressive": True}),
        (small.convert("CMYK"), "JPEG", {}),
        (small.convert("L"), "JPEG", {}),
        (small, "PNG", {}),
        (small.convert("RGBA"), "PNG", {}),
        (small.quantize(16), "PNG", {"transparency": 0}),
        (Image.fromarray(np.asarray(small.convert("L")).astype(np.uint16) * 257), "PNG", {}),
        (small, "GIF", {}),
        (small, "BMP", {}),
        (small, "TIFF", {"compression": "tiff_lzw"}),
        (small.convert("CMYK"), "TIFF", {}),
        (small, "WEBP", {"quality": 70}),
        (small, "AVIF", {"quality": 60}),
        (small, "HEIF", {"quality": 60}),
    ]
    for img, fmt, params in variants:
        buffer = io.BytesIO()
        img.save(buffer, fmt, **params)
        out.append(buffer.getvalue())
    for name in ("bomb_60000.png", "heic_stub.heic", "truncated_60.jpg", "text_as.jpg", "image.heic", "gray16.png"):
        path = EDGE / name
        if path.exists():
            out.append(path.read_bytes())
    return out


SEEDS = seeds()


@st.composite
def mutated_image(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["flip", "header", "u32", "truncate", "insert", "delete", "splice", "junk"]))
        if not data:
            break
        size = len(data)
        if kind == "flip":
            pos = draw(st.integers(0, size - 1))
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "header":  # most parsing decisions sit in the first few hundred bytes
            pos = draw(st.integers(0, min(size, 300) - 1))
            data[pos] = draw(st.integers(0, 255))
        elif kind == "u32":  # sizes, offsets and counts are big-endian or little-endian words
            pos = draw(st.integers(0, max(0, min(size, 400) - 4)))
            order: Literal["big", "little"] = draw(st.sampled_from(["big", "little"]))
            data[pos : pos + 4] = draw(st.sampled_from(INTERESTING_U32)).to_bytes(4, order)
        elif kind == "truncate":
            del data[draw(st.integers(0, size)) :]
        elif kind == "insert":
            pos = draw(st.integers(0, size))
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            pos = draw(st.integers(0, size - 1))
            del data[pos : pos + draw(st.integers(1, 64))]
        elif kind == "splice":
            other = draw(st.sampled_from(SEEDS))
            cut = draw(st.integers(0, size))
            data = data[:cut] + other[draw(st.integers(0, len(other))) :]
        else:
            data += draw(st.binary(max_size=256))
    return bytes(data)


@st.composite
def upload(draw: st.DrawFn) -> tuple[str, bytes]:
    """(content_type, body): usually a good form around the image, sometimes broken framing."""
    image = draw(mutated_image())
    boundary = draw(st.sampled_from([BOUNDARY, "x", "a" * 70]))
    content_type = draw(
        st.sampled_from(
            [f"multipart/form-data; boundary={boundary}"] * 6
            + [
                f'multipart/form-data; boundary="{boundary}"',
                f"multipart/form-data; boundary={boundary}; charset=utf-8",
                "multipart/form-data",
                "image/jpeg",
                "application/json",
                "",
            ]
        )
    )
    delimiter = b"--" + boundary.encode()
    name = draw(st.sampled_from([b"face"] * 6 + [b"other", b"", b'fa"ce']))
    headers = b'Content-Disposition: form-data; name="' + name + b'"; filename="p.jpg"\r\nContent-Type: image/jpeg'
    headers = draw(
        st.sampled_from([headers] * 6 + [headers.replace(b"\r\n", b"\n"), b"", headers + b"\r\nX: " + b"y" * 300])
    )
    part = delimiter + b"\r\n" + headers + b"\r\n\r\n" + image + b"\r\n"
    body = part * draw(st.integers(1, 2)) + delimiter + b"--\r\n"
    framing = draw(st.sampled_from(["ok"] * 8 + ["cut", "lf", "raw", "noise"]))
    if framing == "cut":
        body = body[: draw(st.integers(0, len(body)))]
    elif framing == "lf":
        body = body.replace(b"\r\n", b"\n")
    elif framing == "raw":
        body = image
    elif framing == "noise":
        pos = draw(st.integers(0, len(body)))
        body = body[:pos] + draw(st.binary(max_size=32)) + body[pos:]
    return content_type, body


def run_one(content_type: str, body: bytes, max_side: int | None) -> str:
    """The production path for one upload; returns the outcome's name."""
    try:
        parts = parse_form(content_type, body, expected_fields=("face",))
        part = parts.get("face")
        if part is None:
            return "no-face-field"
        sniff_format(part.data)
        decoded = decode_image(part.data, field="face", limits=LIMITS, max_side=max_side)
    except VisioError as error:
        return error.reason
    pixels = decoded.pixels
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3, pixels.shape
    assert pixels.flags.c_contiguous
    assert decoded.size.width * decoded.size.height <= LIMITS.max_pixels
    if max_side is not None:
        assert max(pixels.shape[:2]) <= max_side, (pixels.shape, max_side)
    return "decoded"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to fuzz")
    parser.add_argument("--max-rss-mb", type=float, default=1024.0, help="fail if resident memory exceeds this")
    parser.add_argument("--input-seconds", type=float, default=5.0, help="fail if one input takes longer")
    parser.add_argument("--verbose", action="store_true", help="print the outcome counts")
    args = parser.parse_args(argv)
    # Pillow warns about damaged EXIF and tags; those are expected here and only bury the summary.
    warnings.simplefilter("ignore")

    stats = Stats()
    process = psutil.Process()
    started = time.monotonic()
    deadline = started + args.seconds

    @settings(
        max_examples=200,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(case=upload(), max_side=st.sampled_from([None, None, 64, 400]))
    def fuzz(case: tuple[str, bytes], max_side: int | None) -> None:
        if time.monotonic() > deadline:
            return
        content_type, body = case
        stats.inputs += 1
        # A hang in C code never returns to Python; faulthandler's own thread still fires.
        faulthandler.dump_traceback_later(args.input_seconds * 4, exit=True)
        begun = time.perf_counter()
        try:
            outcome = run_one(content_type, body, max_side)
        finally:
            faulthandler.cancel_dump_traceback_later()
        elapsed = time.perf_counter() - begun
        stats.worst_seconds = max(stats.worst_seconds, elapsed)
        stats.outcomes[outcome] = stats.outcomes.get(outcome, 0) + 1
        rss = process.memory_info().rss
        stats.peak_rss = max(stats.peak_rss, rss)
        assert elapsed <= args.input_seconds, f"one input took {elapsed:.2f} s"
        assert rss <= args.max_rss_mb * 1024 * 1024, f"RSS {rss / 2**20:.0f} MB above {args.max_rss_mb} MB"

    failures = 0
    while time.monotonic() < deadline:
        try:
            fuzz()
        except Exception:  # Hypothesis re-raises the shrunk failure with its falsifying example
            failures += 1
            traceback.print_exc()
            break
    seconds = time.monotonic() - started
    if args.verbose:
        print(
            f"outcomes: {dict(sorted(stats.outcomes.items()))}; slowest input {stats.worst_seconds:.3f} s; "
            f"peak RSS {stats.peak_rss / 2**20:.0f} MB"
        )
    print(f"fuzz: {stats.inputs} inputs, {failures} failures in {seconds:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
