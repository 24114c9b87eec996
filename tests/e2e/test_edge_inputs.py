"""Every awkward input of shared/edge-inputs through the real service: native gRPC for all of them,
REST through Envoy for a representative set (tests/images/edge, see its CREDITS.md)."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from tests.helpers import EDGE, Rest, ServiceProcess, create_key, error_info, photo
from visio_grpc._proto.visio.v1 import face_service_pb2 as pb
from visio_grpc._proto.visio.v1 import face_service_pb2_grpc as pb_grpc

# The same photo in other clothes: its descriptor must stay this close to the reference's.
SAME_PHOTO_DISTANCE = 0.1
ONE_FACE = [
    "00_reference.jpg", "exif_orient_6.jpg", "exif_orient_3.jpg", "rgba.png", "palette.png", "gray16.png",
    "gray.jpg", "cmyk.jpg", "progressive.jpg", "image.webp", "png_named_as.jpg", "image.heic",
]
# file -> (gRPC code, reason, HTTP status through Envoy)
ERRORS = {
    "empty.jpg": (grpc.StatusCode.INVALID_ARGUMENT, "IMAGE_EMPTY", 400),
    "text_as.jpg": (grpc.StatusCode.INVALID_ARGUMENT, "IMAGE_NOT_RECOGNIZED", 415),
    "truncated_60.jpg": (grpc.StatusCode.INVALID_ARGUMENT, "IMAGE_CORRUPT", 400),
    "heic_stub.heic": (grpc.StatusCode.INVALID_ARGUMENT, "IMAGE_CORRUPT", 400),
    "bomb_60000.png": (grpc.StatusCode.INVALID_ARGUMENT, "IMAGE_TOO_MANY_PIXELS", 413),
    "two_faces.jpg": (grpc.StatusCode.INVALID_ARGUMENT, "MULTIPLE_FACES", 400),
}


def edge(name: str) -> bytes:
    return (EDGE / name).read_bytes()


@pytest.fixture(scope="module")
def face_stub(stub: pb_grpc.FaceServiceStub) -> pb_grpc.FaceServiceStub:
    return stub


@pytest.fixture(scope="module")
def reference(face_stub: pb_grpc.FaceServiceStub, alice: tuple) -> pb.DetectedFace:
    return face_stub.DetectFace(pb.DetectFaceRequest(image=edge("00_reference.jpg")), metadata=alice)


@pytest.fixture(scope="module")
def gray_reference(face_stub: pb_grpc.FaceServiceStub, alice: tuple) -> pb.DetectedFace:
    """Gray inputs lose colour, which moves a descriptor (~0.18 here): compare them to gray."""
    with Image.open(EDGE / "00_reference.jpg") as img:
        buffer = io.BytesIO()
        img.convert("L").save(buffer, "PNG")
    return face_stub.DetectFace(pb.DetectFaceRequest(image=buffer.getvalue()), metadata=alice)


def distance(a: pb.DetectedFace | dict, b: pb.DetectedFace) -> float:
    first = a["descriptor"] if isinstance(a, dict) else a.descriptor
    return float(np.linalg.norm(np.array(first) - np.array(b.descriptor)))


@pytest.mark.parametrize("name", ONE_FACE)
def test_one_face_found_and_close_to_the_reference(
    name: str,
    face_stub: pb_grpc.FaceServiceStub,
    alice: tuple,
    reference: pb.DetectedFace,
    gray_reference: pb.DetectedFace,
) -> None:
    face = face_stub.DetectFace(pb.DetectFaceRequest(image=edge(name)), metadata=alice)
    assert (face.image_size.width, face.image_size.height) == (512, 640), "not upright"
    assert distance(face, gray_reference if name.startswith("gray") else reference) < SAME_PHOTO_DISTANCE
    box, ref_box = face.bounding_box, reference.bounding_box
    if name == "exif_orient_3.jpg" or name == "exif_orient_6.jpg":
        # Upright coordinates: the box sits where the reference's does, not rotated.
        assert abs(box.left - ref_box.left) < 25 and abs(box.top - ref_box.top) < 25
    assert 0 <= box.left < box.right <= 512 and 0 <= box.top < box.bottom <= 640


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_bad_inputs_get_clear_errors_over_grpc(name: str, face_stub: pb_grpc.FaceServiceStub, alice: tuple) -> None:
    code, reason, _ = ERRORS[name]
    with pytest.raises(grpc.RpcError) as raised:
        face_stub.CreateFace(pb.CreateFaceRequest(image=edge(name)) if name != "empty.jpg" else
                             pb.CreateFaceRequest(image=b"\0"[:0]), metadata=alice)
    if name == "empty.jpg":  # empty bytes over gRPC are an unset field
        assert error_info(raised.value).reason == "FIELD_MISSING"
        return
    assert raised.value.code() == code
    info = error_info(raised.value)
    assert info.reason == reason and info.metadata["field"] == "image"
    assert raised.value.details()


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_bad_inputs_get_clear_errors_over_rest(name: str, rest: Rest) -> None:
    _, reason, status = ERRORS[name]
    reply = rest.upload("/v1/faces", {"face": edge(name)})
    assert reply.status == status, reply.body
    assert reply.reason == reason
    assert reply.error_metadata()["field"] == "face"
    assert "Traceback" not in reply.json["message"]


@pytest.mark.parametrize("name", ["exif_orient_6.jpg", "cmyk.jpg", "image.heic", "rgba.png", "png_named_as.jpg"])
def test_representative_inputs_over_rest(name: str, rest: Rest, reference: pb.DetectedFace) -> None:
    reply = rest.upload("/v1/faces/detect", {"face": edge(name)})
    assert reply.status == 200, reply.body
    assert distance(reply.json, reference) < SAME_PHOTO_DISTANCE


def test_many_faces_in_bounded_time(face_stub: pb_grpc.FaceServiceStub, alice: tuple) -> None:
    reply = face_stub.DetectFaces(pb.DetectFacesRequest(image=edge("many_faces_12.jpg")), metadata=alice, timeout=60)
    assert reply.total_found == 12
    boxes = {(f.bounding_box.left, f.bounding_box.top) for f in reply.faces}
    assert len(boxes) == 12


def test_large_photo_works(face_stub: pb_grpc.FaceServiceStub, alice: tuple, reference: pb.DetectedFace) -> None:
    with Image.open(EDGE / "00_reference.jpg") as small:
        large = small.convert("RGB").resize((4800, 6000), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    large.save(buffer, "JPEG", quality=90)
    face = face_stub.DetectFace(pb.DetectFaceRequest(image=buffer.getvalue()), metadata=alice, timeout=60)
    assert (face.image_size.width, face.image_size.height) == (4800, 6000)
    assert face.bounding_box.right - face.bounding_box.left > 1000  # in full-size coordinates
    assert distance(face, reference) < SAME_PHOTO_DISTANCE


def test_tiny_face_is_rejected_with_sizes(face_stub: pb_grpc.FaceServiceStub, rest: Rest, alice: tuple) -> None:
    with Image.open(EDGE / "00_reference.jpg") as small:
        tiny = small.convert("RGB").resize((128, 160))
    buffer = io.BytesIO()
    tiny.save(buffer, "JPEG", quality=95)
    reply = rest.upload("/v1/faces", {"face": buffer.getvalue()})
    assert reply.status == 400 and reply.reason == "FACE_TOO_SMALL", reply.body
    metadata = reply.error_metadata()
    assert metadata["min_face_size"] == "80" and 0 < int(metadata["face_size"]) < 80


@pytest.fixture(scope="module")
def small_limits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceProcess, str]]:
    """A service with a 200 kB image limit, so limits can be tested with small bodies."""
    database_url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('limits') / 'limits.db'}"
    key = create_key(database_url, "limits")
    service = ServiceProcess(
        database_url, extra_args=("--workers", "0"), env={"VISIO_MAX_IMAGE_BYTES": "200000"}
    ).start()
    yield service, key
    service.stop()


def test_upload_limits_rest_and_grpc(small_limits: tuple[ServiceProcess, str]) -> None:
    service, key = small_limits
    big = edge("cmyk.jpg")  # 198 kB: under the limit
    oversized = big + b"\0" * 10_000  # a valid JPEG with trailing bytes, 208 kB: over it
    rest = Rest(service.http_base, key)
    assert rest.upload("/v1/faces/detect", {"face": big}).status == 200
    reply = rest.upload("/v1/faces/detect", {"face": oversized})
    assert reply.status == 413 and reply.reason == "IMAGE_TOO_LARGE"
    assert reply.error_metadata()["max_bytes"] == "200000"
    # Beyond the whole-request limit (2 images + 2 MiB), Envoy answers in the same shape.
    huge = rest.upload("/v1/faces/detect", {"face": b"\xff" * 3_000_000})
    assert huge.status == 413 and huge.reason == "REQUEST_TOO_LARGE" and huge.json["message"]
    with grpc.insecure_channel(service.grpc_target) as channel, pytest.raises(grpc.RpcError) as raised:
        pb_grpc.FaceServiceStub(channel).DetectFace(
            pb.DetectFaceRequest(image=oversized), metadata=(("authorization", key),)
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(raised.value).reason == "IMAGE_TOO_LARGE"


def test_our_faults_are_500_with_a_request_id_and_no_leak(small_limits: tuple[ServiceProcess, str]) -> None:
    service, key = small_limits
    rest = Rest(service.http_base, key)
    assert rest.upload("/v1/faces", {"face": photo("person01_04.jpg")}).status == 200
    database = Path(service.database_url.split("///", 1)[1])
    with sqlite3.connect(database) as connection:  # break the database under the running server
        connection.execute("ALTER TABLE faces RENAME TO faces_gone")
    try:
        reply = rest.get("/v1/faces")
        assert reply.status == 500
        assert reply.reason == "INTERNAL"
        request_id = reply.error_metadata()["request_id"]
        assert request_id in reply.json["message"]
        assert "faces" not in reply.json["message"] and "sqlite" not in reply.body.decode().lower()
        assert any(request_id in line for line in service.output), "request id not in the server log"
    finally:
        with sqlite3.connect(database) as connection:
            connection.execute("ALTER TABLE faces_gone RENAME TO faces")
    assert rest.get("/v1/faces").status == 200
