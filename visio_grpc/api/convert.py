"""Proto <-> domain conversion, and reading photos out of gRPC fields or REST multipart bodies."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from google.api import httpbody_pb2
from google.protobuf import timestamp_pb2

from visio_grpc._proto.visio.v1 import face_service_pb2 as pb
from visio_grpc.api.multipart import FormPart, parse_form
from visio_grpc.domain import models as m
from visio_grpc.domain.errors import FaceIdInvalid, FieldMissing, RequestUndecodable
from visio_grpc.domain.faces import Upload


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _box(box: m.Box) -> pb.BoundingBox:
    return pb.BoundingBox(left=box.left, top=box.top, right=box.right, bottom=box.bottom)


def _points(points: Sequence[m.Point]) -> list[pb.Point]:
    return [pb.Point(x=p.x, y=p.y) for p in points]


def _size(size: m.ImageSize) -> pb.ImageSize:
    return pb.ImageSize(width=size.width, height=size.height)


def face_to_proto(face: m.Face) -> pb.Face:
    return pb.Face(
        id=face.id,
        descriptor=face.descriptor.tolist(),
        bounding_box=_box(face.box),
        landmarks=_points(face.landmarks),
        image_size=_size(face.image_size),
        create_time=_timestamp(face.create_time),
        update_time=_timestamp(face.update_time),
    )


def detected_to_proto(face: m.DetectedFace, size: m.ImageSize) -> pb.DetectedFace:
    return pb.DetectedFace(
        descriptor=face.descriptor.tolist() if face.descriptor is not None else [],
        bounding_box=_box(face.box),
        landmarks=_points(face.landmarks),
        detection_score=face.score,
        image_size=_size(size),
    )


def analysis_to_proto(analysis: m.ImageAnalysis) -> pb.DetectFacesResponse:
    return pb.DetectFacesResponse(
        faces=[detected_to_proto(face, analysis.image_size) for face in analysis.faces],
        total_found=analysis.total_found,
        image_size=_size(analysis.image_size),
    )


def comparison_to_proto(comparison: m.Comparison) -> pb.Comparison:
    return pb.Comparison(distance=comparison.distance, threshold=comparison.threshold, match=comparison.match)


class RequestForm:
    """The fields of one request, from a REST multipart body or from native gRPC fields."""

    def __init__(self, upload: httpbody_pb2.HttpBody | None, form_fields: Sequence[str]) -> None:
        self.is_rest = upload is not None
        self._parts: dict[str, FormPart] = {}
        if upload is not None:
            self._parts = parse_form(upload.content_type, upload.data, expected_fields=form_fields)

    @classmethod
    def of(cls, request: object, *form_fields: str) -> RequestForm:
        has_upload = request.HasField("upload")  # type: ignore[attr-defined]
        return cls(request.upload if has_upload else None, form_fields)  # type: ignore[attr-defined]

    def photo(self, *, form_field: str, grpc_field: str, grpc_value: bytes) -> Upload:
        if self.is_rest:
            part = self._parts.get(form_field)
            if part is None:
                raise FieldMissing(form_field, f"attach the photo as the multipart file field {form_field!r}.")
            return Upload(data=part.data, field=form_field)
        if not grpc_value:
            raise FieldMissing(grpc_field, f"set {grpc_field!r} to the bytes of the photo.")
        return Upload(data=grpc_value, field=grpc_field)

    def face_id(self, *, form_field: str, grpc_value: str) -> str:
        if self.is_rest:
            part = self._parts.get(form_field)
            try:
                value = part.data.decode("utf-8").strip() if part is not None else ""
            except UnicodeDecodeError:
                raise RequestUndecodable() from None
        else:
            value = grpc_value.strip()
        return require_id(value, form_field)


# Ids are UUIDs (36 characters); the bound keeps error messages and trailers small.
MAX_ID_LENGTH = 64


def require_id(value: str, field: str) -> str:
    value = value.strip()
    if not value:
        raise FieldMissing(field, f"set {field!r} to the id of one of your faces.")
    if len(value) > MAX_ID_LENGTH:
        raise FaceIdInvalid(field, len(value), MAX_ID_LENGTH)
    return value
