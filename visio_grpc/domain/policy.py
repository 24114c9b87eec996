"""Which detected faces a call uses: exactly one for single-face calls, the largest few otherwise."""

from __future__ import annotations

from collections.abc import Sequence

from visio_grpc.domain.errors import FaceTooSmall, MultipleFaces, NoFace
from visio_grpc.domain.models import Detection


def select_single_face(detections: Sequence[Detection], *, field: str, min_face_size: int) -> Detection:
    """The one usable face; faces below the minimum size are ignored unless nothing else is found.

    A tiny background face (or a weak false detection) must not block enrolment of the clear face in
    front; but if only tiny faces exist, the caller hears that the face is too small, not "no face".
    """
    usable = [d for d in detections if d.box.width >= min_face_size]
    if len(usable) == 1:
        return usable[0]
    if len(usable) > 1:
        raise MultipleFaces(field, len(usable))
    if detections:
        largest = max(d.box.width for d in detections)
        raise FaceTooSmall(field, largest, min_face_size)
    raise NoFace(field)


def largest_faces(detections: Sequence[Detection], limit: int) -> list[Detection]:
    """Up to `limit` faces, largest first (ties: higher score first)."""
    ranked = sorted(detections, key=lambda d: (d.box.width * d.box.height, d.score), reverse=True)
    return ranked[:limit]
