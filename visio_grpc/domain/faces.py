"""Face use cases: enrol, list, get, update, delete, compare and detect, for one owner at a time."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

from visio_grpc.domain.errors import FaceNotFound, PageSizeInvalid
from visio_grpc.domain.models import (
    Comparison,
    Descriptor,
    DetectedFace,
    Face,
    FacePage,
    ImageAnalysis,
    ImageSize,
    euclidean_distance,
)

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class FaceEngine(Protocol):
    async def analyze(self, data: bytes, *, field: str, single: bool) -> ImageAnalysis: ...


class FaceStore(Protocol):
    async def add(self, face: Face) -> None: ...
    async def get(self, owner: str, face_id: str) -> Face | None: ...
    async def replace_detection(self, face: Face) -> bool: ...
    async def delete(self, owner: str, face_id: str) -> bool: ...
    async def list_page(self, owner: str, page_size: int, page_token: str) -> FacePage: ...


@dataclass(frozen=True)
class Upload:
    """An uploaded photo and the request field it came in (named in every error about it)."""

    data: bytes
    field: str


class FaceUseCases:
    def __init__(self, store: FaceStore, engine: FaceEngine, *, threshold: float) -> None:
        self._store = store
        self._engine = engine
        self.threshold = threshold

    async def detect(self, upload: Upload) -> tuple[ImageSize, DetectedFace]:
        """The single face of a photo, with its descriptor."""
        analysis = await self._engine.analyze(upload.data, field=upload.field, single=True)
        return analysis.image_size, analysis.faces[0]

    async def detect_all(self, upload: Upload) -> ImageAnalysis:
        return await self._engine.analyze(upload.data, field=upload.field, single=False)

    async def create(self, owner: str, upload: Upload) -> Face:
        image_size, detected = await self.detect(upload)
        now = datetime.now(UTC)
        face = Face(
            id=str(uuid.uuid4()),
            owner=owner,
            descriptor=_descriptor_of(detected),
            box=detected.box,
            landmarks=detected.landmarks,
            image_size=image_size,
            create_time=now,
            update_time=now,
        )
        await self._store.add(face)
        return face

    async def get(self, owner: str, face_id: str, *, field: str | None = None) -> Face:
        face = await self._store.get(owner, face_id)
        if face is None:
            raise FaceNotFound(face_id, field=field)
        return face

    async def list(self, owner: str, page_size: int, page_token: str) -> FacePage:
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise PageSizeInvalid(page_size, MAX_PAGE_SIZE)
        return await self._store.list_page(owner, page_size or DEFAULT_PAGE_SIZE, page_token)

    async def update(self, owner: str, face_id: str, upload: Upload) -> Face:
        existing = await self.get(owner, face_id)  # an unknown id fails before the slow part
        image_size, detected = await self.detect(upload)
        updated = replace(
            existing,
            descriptor=_descriptor_of(detected),
            box=detected.box,
            landmarks=detected.landmarks,
            image_size=image_size,
            update_time=datetime.now(UTC),
        )
        if not await self._store.replace_detection(updated):
            raise FaceNotFound(face_id)  # deleted while the photo was being processed
        return updated

    async def delete(self, owner: str, face_id: str) -> None:
        if not await self._store.delete(owner, face_id):
            raise FaceNotFound(face_id)

    async def compare_faces(self, owner: str, face_id_1: str, face_id_2: str) -> Comparison:
        first = await self.get(owner, face_id_1, field="face_1")
        second = await self.get(owner, face_id_2, field="face_2")
        return self._compare(first.descriptor, second.descriptor)

    async def compare_images(self, first: Upload, second: Upload) -> Comparison:
        # Both photos at once: with two workers this halves the wait. If both are bad, the first
        # photo's error is the one reported, whichever finished first.
        results = await asyncio.gather(self.detect(first), self.detect(second), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        (_, face_1), (_, face_2) = results  # type: ignore[misc]
        return self._compare(_descriptor_of(face_1), _descriptor_of(face_2))

    async def compare_face_to_image(self, owner: str, face_id: str, upload: Upload, *, id_field: str) -> Comparison:
        enrolled = await self.get(owner, face_id, field=id_field)
        _, detected = await self.detect(upload)
        return self._compare(enrolled.descriptor, _descriptor_of(detected))

    def _compare(self, first: Descriptor, second: Descriptor) -> Comparison:
        distance = euclidean_distance(first, second)
        return Comparison(distance=distance, threshold=self.threshold, match=distance <= self.threshold)


def _descriptor_of(face: DetectedFace) -> Descriptor:
    # Single-face selection only returns faces above the minimum size, which always get one.
    assert face.descriptor is not None, "selected face has no descriptor"
    return face.descriptor
