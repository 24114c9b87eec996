"""Repositories: one session per unit of work, domain objects in and out (never ORM rows)."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from visio_grpc.domain.errors import PageTokenInvalid
from visio_grpc.domain.models import DESCRIPTOR_SIZE, ApiKey, Box, Descriptor, Face, FacePage, ImageSize, Point
from visio_grpc.storage.tables import ApiKeyRow, FaceRow

_DESCRIPTOR_DTYPE = np.dtype("<f4")


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _pack_descriptor(descriptor: Descriptor) -> bytes:
    return np.ascontiguousarray(descriptor, dtype=_DESCRIPTOR_DTYPE).tobytes()


def _unpack_descriptor(blob: bytes) -> Descriptor:
    array = np.frombuffer(blob, dtype=_DESCRIPTOR_DTYPE).astype(np.float32)
    assert array.shape == (DESCRIPTOR_SIZE,), "stored descriptor has the wrong length"
    return array


def _pack_landmarks(points: tuple[Point, ...]) -> str:
    return ";".join(f"{p.x},{p.y}" for p in points)


def _unpack_landmarks(text: str) -> tuple[Point, ...]:
    if not text:
        return ()
    return tuple(Point(int(x), int(y)) for x, y in (pair.split(",") for pair in text.split(";")))


def _face_from_row(row: FaceRow) -> Face:
    return Face(
        id=row.id,
        owner=row.owner,
        descriptor=_unpack_descriptor(row.descriptor),
        box=Box(row.box_left, row.box_top, row.box_right, row.box_bottom),
        landmarks=_unpack_landmarks(row.landmarks),
        image_size=ImageSize(row.image_width, row.image_height),
        create_time=_utc(row.create_time),
        update_time=_utc(row.update_time),
    )


def _detection_columns(face: Face) -> dict[str, object]:
    """The columns a new photo of a face replaces (all but id, owner and create_time)."""
    return {
        "descriptor": _pack_descriptor(face.descriptor),
        "box_left": face.box.left,
        "box_top": face.box.top,
        "box_right": face.box.right,
        "box_bottom": face.box.bottom,
        "landmarks": _pack_landmarks(face.landmarks),
        "image_width": face.image_size.width,
        "image_height": face.image_size.height,
        "update_time": face.update_time,
    }


def _encode_page_token(face: Face) -> str:
    raw = json.dumps([face.create_time.isoformat(), face.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_page_token(token: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        created, face_id = json.loads(raw)
        return _utc(datetime.fromisoformat(created)), str(face_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as error:
        raise PageTokenInvalid() from error


class FaceRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def add(self, face: Face) -> None:
        async with self._sessions.begin() as session:
            session.add(FaceRow(id=face.id, owner=face.owner, create_time=face.create_time, **_detection_columns(face)))

    async def get(self, owner: str, face_id: str) -> Face | None:
        async with self._sessions() as session:
            row = await session.scalar(select(FaceRow).where(FaceRow.id == face_id, FaceRow.owner == owner))
            return _face_from_row(row) if row is not None else None

    async def replace_detection(self, face: Face) -> bool:
        """Stores a face's new descriptor, box, landmarks and update time; False if it is gone."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(FaceRow).where(FaceRow.id == face.id, FaceRow.owner == face.owner).values(**_detection_columns(face))
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def delete(self, owner: str, face_id: str) -> bool:
        async with self._sessions.begin() as session:
            result = await session.execute(delete(FaceRow).where(FaceRow.id == face_id, FaceRow.owner == owner))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def list_page(self, owner: str, page_size: int, page_token: str) -> FacePage:
        query = select(FaceRow).where(FaceRow.owner == owner)
        if page_token:
            created, last_id = _decode_page_token(page_token)
            query = query.where(
                or_(FaceRow.create_time > created, and_(FaceRow.create_time == created, FaceRow.id > last_id))
            )
        query = query.order_by(FaceRow.create_time, FaceRow.id).limit(page_size + 1)
        async with self._sessions() as session:
            rows = (await session.scalars(query)).all()
        faces = tuple(_face_from_row(row) for row in rows[:page_size])
        next_token = _encode_page_token(faces[-1]) if len(rows) > page_size else ""
        return FacePage(faces=faces, next_page_token=next_token)


class ApiKeyRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def add(self, key: ApiKey, key_hash: str) -> None:
        async with self._sessions.begin() as session:
            session.add(
                ApiKeyRow(
                    prefix=key.prefix,
                    owner=key.owner,
                    key_hash=key_hash,
                    create_time=key.create_time,
                    revoke_time=key.revoke_time,
                )
            )

    async def find(self, prefix: str) -> tuple[ApiKey, str] | None:
        """The key with this prefix and its stored hash."""
        async with self._sessions() as session:
            row = await session.get(ApiKeyRow, prefix)
            return (_key_from_row(row), row.key_hash) if row is not None else None

    async def list_all(self) -> list[ApiKey]:
        async with self._sessions() as session:
            rows = (await session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.create_time))).all()
            return [_key_from_row(row) for row in rows]

    async def revoke(self, prefix: str, when: datetime) -> ApiKey | None:
        async with self._sessions.begin() as session:
            row = await session.get(ApiKeyRow, prefix)
            if row is None:
                return None
            if row.revoke_time is None:
                row.revoke_time = when
            return _key_from_row(row)


def _key_from_row(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        prefix=row.prefix,
        owner=row.owner,
        create_time=_utc(row.create_time),
        revoke_time=_utc(row.revoke_time) if row.revoke_time is not None else None,
    )
