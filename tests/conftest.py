"""Shared fixtures: one real `visio serve` (gRPC + Envoy + SQLite file + dlib worker) per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.helpers import Rest, ServiceProcess, create_key, run_cli
from visio_grpc._proto.visio.v1 import face_service_pb2_grpc


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("db") / "visio.db"
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(scope="session")
def service(database_url: str) -> Iterator[ServiceProcess]:
    process = ServiceProcess(database_url, extra_args=("--workers", "1", "--no-first-key")).start()
    yield process
    assert process.stop() == 0, "".join(process.output)


@pytest.fixture(scope="session")
def alice_key(database_url: str) -> str:
    return create_key(database_url, "alice")


@pytest.fixture(scope="session")
def bob_key(database_url: str) -> str:
    return create_key(database_url, "bob")


@pytest.fixture(scope="session")
def revoked_key(database_url: str) -> str:
    key = create_key(database_url, "carol")
    prefix = key.split("_")[1]
    result = run_cli("keys", "revoke", prefix, database_url=database_url)
    assert result.returncode == 0, result.stderr
    return key


@pytest.fixture(scope="session")
def rest(service: ServiceProcess, alice_key: str) -> Rest:
    return Rest(service.http_base, alice_key)


@pytest.fixture(scope="session")
def bob_rest(service: ServiceProcess, bob_key: str) -> Rest:
    return Rest(service.http_base, bob_key)


@pytest.fixture(scope="session", params=["direct", "via-envoy"])
def channel(request: pytest.FixtureRequest, service: ServiceProcess) -> Iterator[grpc.Channel]:
    """Native gRPC both on the gRPC port and through Envoy's shared HTTP port."""
    port = service.grpc_port if request.param == "direct" else service.http_port
    with grpc.insecure_channel(f"127.0.0.1:{port}") as opened:
        yield opened


@pytest.fixture(scope="session")
def stub(service: ServiceProcess) -> Iterator[face_service_pb2_grpc.FaceServiceStub]:
    with grpc.insecure_channel(service.grpc_target) as opened:
        yield face_service_pb2_grpc.FaceServiceStub(opened)


@pytest.fixture(scope="session")
def alice(alice_key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", alice_key),)


@pytest.fixture(scope="session")
def bob(bob_key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {bob_key}"),)
