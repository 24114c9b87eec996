"""The dlib pipeline for one photo: decode once, detect on a bounded image, describe at full detail.

A FacePipeline owns its dlib models and is not thread-safe (a detector shared between threads
crashed on mixed image sizes): each worker process or thread builds its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dlib
import numpy as np
from PIL import Image

from visio_grpc.domain.models import Box, DetectedFace, Detection, ImageAnalysis, Point
from visio_grpc.domain.policy import largest_faces, select_single_face
from visio_grpc.engine.decode import DecodedImage, DecodeLimits, decode_image
from visio_grpc.engine.models import RESNET, SHAPE_PREDICTORS, models_dir


@dataclass(frozen=True)
class EngineConfig:
    """What the pipeline needs from Settings (picklable, sent to each worker)."""

    limits: DecodeLimits = field(default_factory=DecodeLimits)
    min_face_size: int = 80
    max_faces_per_image: int = 64
    detect_max_side: int = 1024
    descriptor_max_side: int = 2400
    landmarks: int = 68


@dataclass(frozen=True)
class _Found:
    detection: Detection  # box in full-size upright coordinates, clipped
    rect: dlib.rectangle  # unclipped, in the decoded image's coordinates, for the shape predictor


class FacePipeline:
    def __init__(self, config: EngineConfig) -> None:
        folder = models_dir()
        self.config = config
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(folder / SHAPE_PREDICTORS[config.landmarks]))
        self._resnet = dlib.face_recognition_model_v1(str(folder / RESNET))

    def analyze(self, data: bytes, *, field: str, single: bool) -> ImageAnalysis:
        """Every face (largest first, capped) or, when `single`, the one face the call needs."""
        image = decode_image(
            data, field=field, limits=self.config.limits, max_side=self.config.descriptor_max_side
        )
        found = self._detect(image)
        # The policy picks among plain Detections; map its choice back to the dlib rectangle.
        by_detection = {f.detection: f for f in found}
        detections = list(by_detection)
        if single:
            chosen = [select_single_face(detections, field=field, min_face_size=self.config.min_face_size)]
        else:
            chosen = largest_faces(detections, self.config.max_faces_per_image)
        faces = tuple(self._describe(image, by_detection[d]) for d in chosen)
        return ImageAnalysis(image_size=image.size, faces=faces, total_found=len(detections))

    def _detect(self, image: DecodedImage) -> list[_Found]:
        pixels = image.pixels
        height, width = pixels.shape[:2]
        long_side = max(height, width)
        target = self.config.detect_max_side
        # HOG cost grows with the pixels scanned; upsampling quadruples it. Scan at most about
        # target x target: shrink big photos, upsample small ones once so that small faces are
        # still found.
        if long_side > target:
            factor = target / long_side
            size = (max(1, round(width * factor)), max(1, round(height * factor)))
            scan = np.ascontiguousarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
            factor_x, factor_y, upsample = size[0] / width, size[1] / height, 0
        else:
            scan, factor_x, factor_y = pixels, 1.0, 1.0
            upsample = 1 if long_side * 2 <= target else 0
        rects, scores, _ = self._detector.run(scan, upsample, 0.0)
        to_full_x = 1.0 / (factor_x * image.scale)
        to_full_y = 1.0 / (factor_y * image.scale)
        full_w, full_h = image.size.width, image.size.height
        found = []
        for rect, score in zip(rects, scores, strict=True):
            box = Box(
                left=_clip(rect.left() * to_full_x, full_w),
                top=_clip(rect.top() * to_full_y, full_h),
                right=_clip((rect.right() + 1) * to_full_x, full_w),
                bottom=_clip((rect.bottom() + 1) * to_full_y, full_h),
            )
            decoded_rect = dlib.rectangle(
                round(rect.left() / factor_x),
                round(rect.top() / factor_y),
                round((rect.right() + 1) / factor_x) - 1,
                round((rect.bottom() + 1) / factor_y) - 1,
            )
            found.append(_Found(Detection(box=box, score=float(score)), decoded_rect))
        return found

    def _describe(self, image: DecodedImage, found: _Found) -> DetectedFace:
        shape = self._predictor(image.pixels, found.rect)
        to_full = 1.0 / image.scale
        landmarks = tuple(
            Point(_clip(p.x * to_full, image.size.width - 1), _clip(p.y * to_full, image.size.height - 1))
            for p in shape.parts()
        )
        descriptor = None
        if found.detection.box.width >= self.config.min_face_size:
            descriptor = np.asarray(self._resnet.compute_face_descriptor(image.pixels, shape), dtype=np.float32)
        return DetectedFace(
            box=found.detection.box, score=found.detection.score, landmarks=landmarks, descriptor=descriptor
        )


def _clip(value: float, upper: int) -> int:
    return min(max(round(value), 0), upper)
