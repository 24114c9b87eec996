"""Domain values: faces, detections, comparisons and API keys, free of gRPC and SQL types."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

DESCRIPTOR_SIZE = 128
Descriptor = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Box:
    """A rectangle in upright image pixels; right and bottom are exclusive."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


@dataclass(frozen=True)
class Point:
    x: int
    y: int


@dataclass(frozen=True)
class ImageSize:
    width: int
    height: int


@dataclass(frozen=True)
class Detection:
    """A face the detector found, before any descriptor is computed."""

    box: Box
    score: float


@dataclass(frozen=True)
class DetectedFace:
    """A face found in a photo; `descriptor` is None when the face is below the minimum size."""

    box: Box
    score: float
    landmarks: tuple[Point, ...]
    descriptor: Descriptor | None


@dataclass(frozen=True)
class ImageAnalysis:
    """What the engine found in one photo."""

    image_size: ImageSize
    faces: tuple[DetectedFace, ...]
    total_found: int


@dataclass(frozen=True)
class Face:
    """An enrolled face, owned by the owner of the API key that created it."""

    id: str
    owner: str
    descriptor: Descriptor
    box: Box
    landmarks: tuple[Point, ...]
    image_size: ImageSize
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True)
class FacePage:
    faces: tuple[Face, ...]
    next_page_token: str


@dataclass(frozen=True)
class Comparison:
    distance: float
    threshold: float
    match: bool


@dataclass(frozen=True)
class ApiKey:
    """A stored API key; the secret itself is never kept, only its hash."""

    prefix: str
    owner: str
    create_time: datetime
    revoke_time: datetime | None

    @property
    def active(self) -> bool:
        return self.revoke_time is None


def euclidean_distance(a: Descriptor, b: Descriptor) -> float:
    """The true (not squared) Euclidean distance, computed in float64."""
    return float(np.linalg.norm(a.astype(np.float64) - b.astype(np.float64)))
