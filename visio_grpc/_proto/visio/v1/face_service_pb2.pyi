import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Face(_message.Message):
    __slots__ = ("id", "descriptor", "bounding_box", "landmarks", "image_size", "create_time", "update_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    BOUNDING_BOX_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    descriptor: _containers.RepeatedScalarFieldContainer[float]
    bounding_box: BoundingBox
    landmarks: _containers.RepeatedCompositeFieldContainer[Point]
    image_size: ImageSize
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., descriptor: _Optional[_Iterable[float]] = ..., bounding_box: _Optional[_Union[BoundingBox, _Mapping]] = ..., landmarks: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., image_size: _Optional[_Union[ImageSize, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DetectedFace(_message.Message):
    __slots__ = ("descriptor", "bounding_box", "landmarks", "detection_score", "image_size")
    DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    BOUNDING_BOX_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    DETECTION_SCORE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    descriptor: _containers.RepeatedScalarFieldContainer[float]
    bounding_box: BoundingBox
    landmarks: _containers.RepeatedCompositeFieldContainer[Point]
    detection_score: float
    image_size: ImageSize
    def __init__(self, descriptor: _Optional[_Iterable[float]] = ..., bounding_box: _Optional[_Union[BoundingBox, _Mapping]] = ..., landmarks: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., detection_score: _Optional[float] = ..., image_size: _Optional[_Union[ImageSize, _Mapping]] = ...) -> None: ...

class BoundingBox(_message.Message):
    __slots__ = ("left", "top", "right", "bottom")
    LEFT_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    RIGHT_FIELD_NUMBER: _ClassVar[int]
    BOTTOM_FIELD_NUMBER: _ClassVar[int]
    left: int
    top: int
    right: int
    bottom: int
    def __init__(self, left: _Optional[int] = ..., top: _Optional[int] = ..., right: _Optional[int] = ..., bottom: _Optional[int] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: int
    y: int
    def __init__(self, x: _Optional[int] = ..., y: _Optional[int] = ...) -> None: ...

class ImageSize(_message.Message):
    __slots__ = ("width", "height")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class Comparison(_message.Message):
    __slots__ = ("distance", "threshold", "match")
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    distance: float
    threshold: float
    match: bool
    def __init__(self, distance: _Optional[float] = ..., threshold: _Optional[float] = ..., match: _Optional[bool] = ...) -> None: ...

class CreateFaceRequest(_message.Message):
    __slots__ = ("image", "upload")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    upload: _httpbody_pb2.HttpBody
    def __init__(self, image: _Optional[bytes] = ..., upload: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ...) -> None: ...

class ListFacesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListFacesResponse(_message.Message):
    __slots__ = ("faces", "next_page_token")
    FACES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    faces: _containers.RepeatedCompositeFieldContainer[Face]
    next_page_token: str
    def __init__(self, faces: _Optional[_Iterable[_Union[Face, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetFaceRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class UpdateFaceRequest(_message.Message):
    __slots__ = ("id", "image", "upload")
    ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_FIELD_NUMBER: _ClassVar[int]
    id: str
    image: bytes
    upload: _httpbody_pb2.HttpBody
    def __init__(self, id: _Optional[str] = ..., image: _Optional[bytes] = ..., upload: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ...) -> None: ...

class DeleteFaceRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteFaceResponse(_message.Message):
    __slots__ = ("id", "deleted")
    ID_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    id: str
    deleted: bool
    def __init__(self, id: _Optional[str] = ..., deleted: _Optional[bool] = ...) -> None: ...

class CompareFacesRequest(_message.Message):
    __slots__ = ("face_1", "face_2")
    FACE_1_FIELD_NUMBER: _ClassVar[int]
    FACE_2_FIELD_NUMBER: _ClassVar[int]
    face_1: str
    face_2: str
    def __init__(self, face_1: _Optional[str] = ..., face_2: _Optional[str] = ...) -> None: ...

class CompareImagesRequest(_message.Message):
    __slots__ = ("image_1", "image_2", "upload")
    IMAGE_1_FIELD_NUMBER: _ClassVar[int]
    IMAGE_2_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_FIELD_NUMBER: _ClassVar[int]
    image_1: bytes
    image_2: bytes
    upload: _httpbody_pb2.HttpBody
    def __init__(self, image_1: _Optional[bytes] = ..., image_2: _Optional[bytes] = ..., upload: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ...) -> None: ...

class CompareFaceToImageRequest(_message.Message):
    __slots__ = ("face_id", "image", "upload")
    FACE_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_FIELD_NUMBER: _ClassVar[int]
    face_id: str
    image: bytes
    upload: _httpbody_pb2.HttpBody
    def __init__(self, face_id: _Optional[str] = ..., image: _Optional[bytes] = ..., upload: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ...) -> None: ...

class DetectFaceRequest(_message.Message):
    __slots__ = ("image", "upload")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    upload: _httpbody_pb2.HttpBody
    def __init__(self, image: _Optional[bytes] = ..., upload: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ...) -> None: ...

class DetectFacesRequest(_message.Message):
    __slots__ = ("image", "upload")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    upload: _httpbody_pb2.HttpBody
    def __init__(self, image: _Optional[bytes] = ..., upload: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ...) -> None: ...

class DetectFacesResponse(_message.Message):
    __slots__ = ("faces", "total_found", "image_size")
    FACES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FOUND_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    faces: _containers.RepeatedCompositeFieldContainer[DetectedFace]
    total_found: int
    image_size: ImageSize
    def __init__(self, faces: _Optional[_Iterable[_Union[DetectedFace, _Mapping]]] = ..., total_found: _Optional[int] = ..., image_size: _Optional[_Union[ImageSize, _Mapping]] = ...) -> None: ...
