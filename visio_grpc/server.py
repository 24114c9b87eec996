"""Server factory and lifecycle: database, engine workers, gRPC server, and the Envoy gateway.

`create_server` only builds and binds (tests call it with port 0); `VisioApp` runs everything for
`visio serve` and stops it in order: health NOT_SERVING, gateway, gRPC grace period, workers, DB.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.ext.asyncio import AsyncEngine

from visio_grpc._proto.visio.v1 import face_service_pb2, face_service_pb2_grpc
from visio_grpc.api.interceptor import ApiInterceptor
from visio_grpc.api.servicer import FaceServicer
from visio_grpc.config import MIB, Settings
from visio_grpc.domain.faces import FaceEngine, FaceUseCases
from visio_grpc.domain.keys import KeyService
from visio_grpc.engine.decode import DecodeLimits
from visio_grpc.engine.pipeline import EngineConfig
from visio_grpc.engine.pool import EnginePool
from visio_grpc.gateway import EnvoyGateway, GatewayConfig
from visio_grpc.storage.database import create_engine, create_schema, session_factory
from visio_grpc.storage.repository import ApiKeyRepository, FaceRepository

log = logging.getLogger(__name__)

SERVICE_NAME = face_service_pb2.DESCRIPTOR.services_by_name["FaceService"].full_name
STOP_GRACE_S = 5.0
WORKER_STOP_S = 10.0


def engine_config(settings: Settings) -> EngineConfig:
    return EngineConfig(
        limits=DecodeLimits(max_image_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels),
        min_face_size=settings.min_face_size,
        max_faces_per_image=settings.max_faces_per_image,
        detect_max_side=settings.detect_max_side,
        descriptor_max_side=settings.descriptor_max_side,
        landmarks=settings.landmarks,
    )


class StartupError(RuntimeError):
    """The service cannot start as configured (a port in use, say); the message says what to change."""


@dataclass
class Storage:
    database: AsyncEngine
    keys: KeyService
    faces: FaceRepository

    async def close(self) -> None:
        await self.database.dispose()


async def open_storage(database_url: str) -> Storage:
    database = create_engine(database_url)
    await create_schema(database)
    sessions = session_factory(database)
    return Storage(database=database, keys=KeyService(ApiKeyRepository(sessions)), faces=FaceRepository(sessions))


@dataclass
class BoundServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer  # type: ignore[name-defined]


def create_server(settings: Settings, storage: Storage, engine: FaceEngine) -> BoundServer:
    """Builds the gRPC server and binds it to settings.host:settings.grpc_port (0: any free port)."""
    # Above the gateway's body limit, so oversize uploads get our error, not gRPC's own.
    message_limit = settings.max_request_bytes + 4 * MIB
    server = grpc.aio.server(
        interceptors=[ApiInterceptor(storage.keys)],
        options=[
            ("grpc.max_receive_message_length", message_limit),
            ("grpc.max_send_message_length", message_limit),
            # Above the gateway's header limit, so long headers get the gateway's clear 431.
            ("grpc.max_metadata_size", 64 * 1024),
        ],
    )
    faces = FaceUseCases(storage.faces, engine, threshold=settings.match_threshold)
    face_service_pb2_grpc.add_FaceServiceServicer_to_server(FaceServicer(faces), server)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = f"{_bracket(settings.host)}:{settings.grpc_port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as error:
        raise StartupError(
            f"cannot listen for gRPC on {address} ({error}): free the port or choose another with --grpc-port"
        ) from None
    return BoundServer(server=server, port=port, health=health_servicer)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class VisioApp:
    """Everything `visio serve` runs, started and stopped in the right order."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.grpc_port = 0
        self.http_port: int | None = None
        self._storage: Storage | None = None
        self._engine: EnginePool | None = None
        self._bound: BoundServer | None = None
        self._gateway: EnvoyGateway | None = None

    async def start(self) -> None:
        settings = self.settings
        self._storage = await open_storage(settings.database_url)
        self._engine = EnginePool(
            engine_config(settings),
            workers=settings.workers,
            max_queued=settings.max_queued_images,
            job_timeout_s=settings.worker_timeout_s,
        )
        await self._engine.start()
        self._bound = create_server(settings, self._storage, self._engine)
        await self._bound.server.start()
        self.grpc_port = self._bound.port
        if settings.gateway:
            gateway = EnvoyGateway(
                GatewayConfig(
                    http_host=settings.host,
                    http_port=settings.http_port,
                    grpc_host="127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host,
                    grpc_port=self.grpc_port,
                    max_request_bytes=settings.max_request_bytes,
                    request_timeout_s=settings.request_timeout_s,
                    envoy_binary=settings.envoy_binary,
                )
            )
            self._gateway = gateway
            self.http_port = await gateway.start()
        for service in ("", SERVICE_NAME):
            await self._bound.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    def kill(self) -> None:
        """Stops the gateway and the workers at once, without draining."""
        if self._gateway is not None and self._gateway.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._gateway.pid, signal.SIGKILL)
        if self._engine is not None:
            self._engine.kill()

    async def stop(self) -> None:
        if self._bound is not None:
            for service in ("", SERVICE_NAME):
                await self._bound.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self._gateway is not None:
            await self._gateway.stop()
        if self._bound is not None:
            await self._bound.server.stop(STOP_GRACE_S)
        if self._engine is not None:
            # Calls were cancelled after the grace period; a worker still busy is stuck.
            await self._engine.close(timeout_s=min(self.settings.worker_timeout_s, WORKER_STOP_S))
        if self._storage is not None:
            await self._storage.close()


async def run_until_signalled(app: VisioApp) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if not stop.is_set():
            stop.set()
            return
        # A second signal: the user has waited enough. Take the children down with us.
        log.warning("second stop signal: stopping at once")
        app.kill()
        os._exit(1)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    try:
        await app.start()
        host = app.settings.host
        http = f"{host}:{app.http_port}" if app.http_port is not None else "off"
        print(f"visio ready grpc={host}:{app.grpc_port} http={http}", flush=True)
        await stop.wait()
        log.info("stopping")
    finally:
        await app.stop()
