"""The same operations for native gRPC clients, on the gRPC port and through Envoy's HTTP port."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.helpers import EDGE, bad_request, error_info, expected_distance, photo
from visio_grpc._proto.visio.v1 import face_service_pb2 as pb
from visio_grpc._proto.visio.v1 import face_service_pb2_grpc as pb_grpc

Metadata = tuple[tuple[str, str], ...]


@pytest.fixture(scope="module")
def face_stub(channel: grpc.Channel) -> pb_grpc.FaceServiceStub:
    return pb_grpc.FaceServiceStub(channel)


def fails(call: object, request: object, metadata: Metadata | None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call(request, metadata=metadata, timeout=60)  # type: ignore[operator]
    return raised.value


def test_health_and_reflection_need_no_key(channel: grpc.Channel) -> None:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="visio.v1.FaceService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_face_lifecycle(face_stub: pb_grpc.FaceServiceStub, alice: Metadata) -> None:
    created = face_stub.CreateFace(pb.CreateFaceRequest(image=photo("person05_01.jpg")), metadata=alice)
    assert len(created.descriptor) == 128 and created.id
    assert created.create_time.seconds > 0
    got = face_stub.GetFace(pb.GetFaceRequest(id=created.id), metadata=alice)
    assert list(got.descriptor) == list(created.descriptor)
    updated = face_stub.UpdateFace(pb.UpdateFaceRequest(id=created.id, image=photo("person05_02.jpg")), metadata=alice)
    assert list(updated.descriptor) != list(created.descriptor)
    listed = face_stub.ListFaces(pb.ListFacesRequest(page_size=1000), metadata=alice)
    assert created.id in [face.id for face in listed.faces]
    deleted = face_stub.DeleteFace(pb.DeleteFaceRequest(id=created.id), metadata=alice)
    assert deleted.deleted
    error = fails(face_stub.GetFace, pb.GetFaceRequest(id=created.id), alice)
    assert error.code() == grpc.StatusCode.NOT_FOUND and error_info(error).reason == "FACE_NOT_FOUND"


def test_pagination(face_stub: pb_grpc.FaceServiceStub, alice: Metadata) -> None:
    for _ in range(3):
        face_stub.CreateFace(pb.CreateFaceRequest(image=photo("person01_04.jpg")), metadata=alice)
    seen: list[str] = []
    token = ""
    while True:
        page = face_stub.ListFaces(pb.ListFacesRequest(page_size=2, page_token=token), metadata=alice)
        assert len(page.faces) <= 2
        seen += [face.id for face in page.faces]
        token = page.next_page_token
        if not token:
            break
    everything = face_stub.ListFaces(pb.ListFacesRequest(page_size=1000), metadata=alice)
    assert seen == [face.id for face in everything.faces] and len(seen) >= 3


def test_compare_calls(face_stub: pb_grpc.FaceServiceStub, alice: Metadata) -> None:
    a = face_stub.CreateFace(pb.CreateFaceRequest(image=photo("person01_04.jpg")), metadata=alice)
    b = face_stub.CreateFace(pb.CreateFaceRequest(image=photo("person01_05.jpg")), metadata=alice)
    by_id = face_stub.CompareFaces(pb.CompareFacesRequest(face_1=a.id, face_2=b.id), metadata=alice)
    assert by_id.match and by_id.distance == pytest.approx(expected_distance("person01_04.jpg", "person01_05.jpg"), abs=0.03)
    itself = face_stub.CompareFaces(pb.CompareFacesRequest(face_1=a.id, face_2=a.id), metadata=alice)
    assert itself.distance == 0.0 and itself.match
    images = face_stub.CompareImages(
        pb.CompareImagesRequest(image_1=photo("person01_04.jpg"), image_2=photo("person05_01.jpg")), metadata=alice
    )
    assert not images.match and images.distance > 0.8
    mixt = face_stub.CompareFaceToImage(
        pb.CompareFaceToImageRequest(face_id=a.id, image=photo("person01_05.jpg")), metadata=alice
    )
    assert mixt.match and mixt.distance == pytest.approx(by_id.distance, abs=1e-4)


def test_detect_calls(face_stub: pb_grpc.FaceServiceStub, alice: Metadata) -> None:
    one = face_stub.DetectFace(pb.DetectFaceRequest(image=photo("person03_05.jpg")), metadata=alice)
    assert len(one.descriptor) == 128 and one.image_size.width == 410
    many = face_stub.DetectFaces(pb.DetectFacesRequest(image=(EDGE / "many_faces_12.jpg").read_bytes()), metadata=alice)
    assert many.total_found == 12 and len(many.faces) == 12


def test_errors_carry_reason_and_field(face_stub: pb_grpc.FaceServiceStub, alice: Metadata) -> None:
    error = fails(face_stub.CreateFace, pb.CreateFaceRequest(image=photo("noface_04.jpg")), alice)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(error)
    assert info.reason == "NO_FACE" and info.domain == "visio.dev" and info.metadata["field"] == "image"
    violations = bad_request(error)
    assert violations is not None and violations.field_violations[0].field == "image"

    error = fails(face_stub.CreateFace, pb.CreateFaceRequest(image=(EDGE / "two_faces.jpg").read_bytes()), alice)
    assert error_info(error).reason == "MULTIPLE_FACES" and error_info(error).metadata["face_count"] == "2"

    error = fails(face_stub.CreateFace, pb.CreateFaceRequest(), alice)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_info(error).reason == "FIELD_MISSING"

    error = fails(face_stub.CompareImages, pb.CompareImagesRequest(image_1=photo("person01_04.jpg"), image_2=b"GIF8 nope"), alice)
    assert error_info(error).reason in {"IMAGE_CORRUPT", "IMAGE_NOT_RECOGNIZED"}
    assert error_info(error).metadata["field"] == "image_2"


def test_keys(face_stub: pb_grpc.FaceServiceStub, revoked_key: str, alice: Metadata, bob: Metadata) -> None:
    for metadata, reason in ((None, "API_KEY_MISSING"), ((("authorization", "nope"),), "API_KEY_INVALID"),
                             ((("authorization", revoked_key),), "API_KEY_REVOKED")):
        error = fails(face_stub.ListFaces, pb.ListFacesRequest(), metadata)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED and error_info(error).reason == reason
    alices = face_stub.CreateFace(pb.CreateFaceRequest(image=photo("person03_05.jpg")), metadata=alice)
    error = fails(face_stub.GetFace, pb.GetFaceRequest(id=alices.id), bob)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = fails(face_stub.CompareFaceToImage, pb.CompareFaceToImageRequest(face_id=alices.id, image=photo("person03_05.jpg")), bob)
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_a_slow_photo_does_not_stall_other_calls(stub: pb_grpc.FaceServiceStub, alice: Metadata) -> None:
    """dlib runs in worker processes: while one big photo is processed, other calls are answered."""
    import io
    import threading

    import numpy as np
    from PIL import Image

    gradient = np.linspace(0, 255, 7000, dtype=np.uint8)
    slow_photo = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.broadcast_to(gradient, (7000, 7000)))).save(slow_photo, "PNG")
    outcome: list[object] = []

    def detect_slowly() -> None:
        try:
            outcome.append(stub.DetectFaces(pb.DetectFacesRequest(image=slow_photo.getvalue()), metadata=alice, timeout=120))
        except grpc.RpcError as error:
            outcome.append(error)

    slow = threading.Thread(target=detect_slowly)
    slow.start()
    try:
        for _ in range(3):
            stub.ListFaces(pb.ListFacesRequest(page_size=1), metadata=alice, timeout=30)
        assert slow.is_alive(), "the big photo finished first, so this test proved nothing"
    finally:
        slow.join()
    assert isinstance(outcome[0], pb.DetectFacesResponse) and outcome[0].total_found == 0
