"""Fast domain tests: use cases over a real SQLite file with a deterministic fake engine."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from visio_grpc.domain import errors
from visio_grpc.domain.faces import FaceUseCases, Upload
from visio_grpc.domain.keys import KeyService, key_from_header
from visio_grpc.domain.models import Box, DetectedFace, Detection, ImageAnalysis, ImageSize, Point
from visio_grpc.domain.policy import largest_faces, select_single_face
from visio_grpc.server import Storage, open_storage


class FakeEngine:
    """Maps photo bytes to a descriptor: b"face:<n>" is one face whose descriptor is n * e0."""

    async def analyze(self, data: bytes, *, field: str, single: bool) -> ImageAnalysis:
        if not data.startswith(b"face:"):
            raise errors.NoFace(field)
        descriptor = np.zeros(128, dtype=np.float32)
        descriptor[0] = float(data.split(b":")[1])
        face = DetectedFace(box=Box(0, 0, 100, 100), score=1.0, landmarks=(Point(1, 2),), descriptor=descriptor)
        return ImageAnalysis(image_size=ImageSize(200, 200), faces=(face,), total_found=1)


@pytest.fixture
async def storage(tmp_path: Path) -> Storage:
    opened = await open_storage(f"sqlite+aiosqlite:///{tmp_path / 'unit.db'}")
    yield opened  # type: ignore[misc]
    await opened.close()


@pytest.fixture
def faces(storage: Storage) -> FaceUseCases:
    return FaceUseCases(storage.faces, FakeEngine(), threshold=0.6)


async def test_compare_is_true_euclidean_distance(faces: FaceUseCases) -> None:
    a = await faces.create("alice", Upload(b"face:0.3", "face"))
    b = await faces.create("alice", Upload(b"face:0.8", "face"))
    result = await faces.compare_faces("alice", a.id, b.id)
    assert result.distance == pytest.approx(0.5, abs=1e-6)  # squared would be 0.25
    assert result.match is True and result.threshold == 0.6
    c = await faces.create("alice", Upload(b"face:1.5", "face"))
    assert (await faces.compare_faces("alice", a.id, c.id)).match is False


async def test_threshold_is_inclusive(storage: Storage) -> None:
    faces = FaceUseCases(storage.faces, FakeEngine(), threshold=0.5)
    result = await faces.compare_images(Upload(b"face:0.25", "face1"), Upload(b"face:0.75", "face2"))
    assert result.distance == pytest.approx(0.5) and result.match is True


async def test_owners_are_isolated(faces: FaceUseCases) -> None:
    a = await faces.create("alice", Upload(b"face:1", "face"))
    with pytest.raises(errors.FaceNotFound):
        await faces.get("bob", a.id)
    with pytest.raises(errors.FaceNotFound):
        await faces.delete("bob", a.id)
    with pytest.raises(errors.FaceNotFound) as raised:
        await faces.compare_faces("bob", a.id, a.id)
    assert raised.value.field == "face_1"
    assert (await faces.list("bob", 0, "")).faces == ()


async def test_pagination_walks_everything_once(faces: FaceUseCases) -> None:
    created = [await faces.create("alice", Upload(f"face:{i}".encode(), "face")) for i in range(7)]
    seen, token = [], ""
    while True:
        page = await faces.list("alice", 3, token)
        seen += [face.id for face in page.faces]
        token = page.next_page_token
        if not token:
            break
    assert seen == [face.id for face in created]
    with pytest.raises(errors.PageTokenInvalid):
        await faces.list("alice", 3, "%%%")
    with pytest.raises(errors.PageSizeInvalid):
        await faces.list("alice", -1, "")


async def test_update_keeps_id_and_create_time(faces: FaceUseCases) -> None:
    a = await faces.create("alice", Upload(b"face:1", "face"))
    updated = await faces.update("alice", a.id, Upload(b"face:2", "face"))
    assert updated.id == a.id and updated.create_time == a.create_time and updated.update_time > a.update_time
    stored = await faces.get("alice", a.id)
    assert float(stored.descriptor[0]) == 2.0 and stored.create_time == a.create_time
    with pytest.raises(errors.NoFace):
        await faces.update("alice", a.id, Upload(b"nothing", "face"))
    assert float((await faces.get("alice", a.id)).descriptor[0]) == 2.0


async def test_compare_images_reports_first_photos_error(faces: FaceUseCases) -> None:
    with pytest.raises(errors.NoFace) as raised:
        await faces.compare_images(Upload(b"bad", "face1"), Upload(b"bad", "face2"))
    assert raised.value.field == "face1"


async def test_keys_are_hashed_checked_and_revocable(storage: Storage) -> None:
    keys: KeyService = storage.keys
    new = await keys.create("alice")
    assert (await keys.authenticate(new.secret)).owner == "alice"
    assert (await keys.authenticate(f"Bearer {new.secret}")).owner == "alice"
    stored = await storage.keys.list()
    assert [k.prefix for k in stored] == [new.key.prefix]
    tampered = new.secret[:-1] + ("A" if new.secret[-1] != "A" else "B")
    with pytest.raises(errors.ApiKeyInvalid):
        await keys.authenticate(tampered)
    await keys.revoke(new.key.prefix)
    with pytest.raises(errors.ApiKeyRevoked):
        await keys.authenticate(new.secret)
    with pytest.raises(errors.ApiKeyNotFound):
        await keys.revoke("000000000000")


def test_authorization_header_forms() -> None:
    assert key_from_header("abc") == "abc"
    assert key_from_header("Bearer abc") == "abc"
    assert key_from_header("bearer   abc ") == "abc"
    for empty in (None, "", "   "):
        with pytest.raises(errors.ApiKeyMissing):
            key_from_header(empty)


def _detection(width: int, score: float = 1.0) -> Detection:
    return Detection(box=Box(0, 0, width, width), score=score)


def test_single_face_policy() -> None:
    big, tiny = _detection(200), _detection(30)
    assert select_single_face([big, tiny], field="face", min_face_size=80) is big
    with pytest.raises(errors.MultipleFaces) as several:
        select_single_face([big, _detection(150)], field="face1", min_face_size=80)
    assert several.value.metadata == {"field": "face1", "face_count": "2"}
    with pytest.raises(errors.FaceTooSmall) as small:
        select_single_face([tiny], field="face", min_face_size=80)
    assert small.value.metadata["face_size"] == "30" and small.value.metadata["min_face_size"] == "80"
    with pytest.raises(errors.NoFace):
        select_single_face([], field="face", min_face_size=80)
    assert largest_faces([tiny, big, _detection(100)], 2) == [big, _detection(100)]


def test_errors_survive_pickling_between_processes() -> None:
    error = errors.ImageTooManyPixels("face", 60000, 60000, 64_000_000)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is errors.ImageTooManyPixels
    assert copy.message == error.message and copy.metadata == error.metadata and copy.field == "face"
