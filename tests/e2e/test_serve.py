"""`visio serve` and `visio keys` as a user runs them: restart persistence, first key, shutdown."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import Rest, ServiceProcess, create_key, photo, run_cli


def test_data_survives_a_restart(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'restart.db'}"
    key = create_key(database_url, "restart")
    first = ServiceProcess(database_url, extra_args=("--workers", "1")).start()
    try:
        created = Rest(first.http_base, key).upload("/v1/faces", {"face": photo("person01_04.jpg")})
        assert created.status == 200, created.body
    finally:
        assert first.stop() == 0
    second = ServiceProcess(database_url, extra_args=("--workers", "1")).start()
    try:
        got = Rest(second.http_base, key).get(f"/v1/faces/{created.json['id']}")
        assert got.status == 200 and got.json["descriptor"] == created.json["descriptor"]
    finally:
        assert second.stop() == 0


def test_first_start_prints_a_working_key(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'first.db'}"
    service = ServiceProcess(database_url, extra_args=("--workers", "0")).start()
    try:
        lines = [line.strip() for line in service.output if line.startswith("VISIO_API_KEY=")]
        assert len(lines) == 1
        key = lines[0].split("=", 1)[1]
        assert Rest(service.http_base, key).get("/v1/faces").status == 200
    finally:
        assert service.stop() == 0
    again = ServiceProcess(database_url, extra_args=("--workers", "0")).start()
    try:
        assert not [line for line in again.output if line.startswith("VISIO_API_KEY=")]
    finally:
        again.stop()


def test_keys_cli(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    key = create_key(database_url, "team-a")
    assert key.startswith("visio_") and len(key) >= 40
    prefix = key.split("_")[1]
    listed = run_cli("keys", "list", database_url=database_url)
    assert prefix in listed.stdout and "team-a" in listed.stdout and "active" in listed.stdout
    assert key not in listed.stdout
    assert run_cli("keys", "revoke", prefix, database_url=database_url).returncode == 0
    assert "revoked" in run_cli("keys", "list", database_url=database_url).stdout
    unknown = run_cli("keys", "revoke", "ffffffffffff", database_url=database_url)
    assert unknown.returncode == 1 and "No API key" in unknown.stderr


def test_a_dead_worker_is_replaced(tmp_path: Path) -> None:
    import threading

    import psutil

    database_url = f"sqlite+aiosqlite:///{tmp_path / 'crash.db'}"
    key = create_key(database_url, "crash")
    service = ServiceProcess(database_url, extra_args=("--workers", "1", "--no-gateway")).start()
    try:
        import grpc

        from tests.helpers import error_info
        from visio_grpc._proto.visio.v1 import face_service_pb2 as pb
        from visio_grpc._proto.visio.v1 import face_service_pb2_grpc as pb_grpc

        assert service.process is not None
        server = psutil.Process(service.process.pid)

        def worker() -> psutil.Process:
            python_children = [c for c in server.children() if "python" in c.name().lower()]
            assert len(python_children) >= 1
            return python_children[-1]

        metadata = (("authorization", key),)
        with grpc.insecure_channel(service.grpc_target) as channel:
            stub = pb_grpc.FaceServiceStub(channel)
            # Killed while idle: the next photo simply runs on a new worker.
            idle = worker()
            idle.kill()
            idle.wait(timeout=10)
            assert len(stub.DetectFace(pb.DetectFaceRequest(image=photo("person01_04.jpg")), metadata=metadata).descriptor) == 128

            # Killed mid-photo: that call gets a retryable error, and the service carries on.
            busy = worker()
            before = busy.cpu_times().user
            outcome: list[object] = []
            many = (Path(__file__).parents[1] / "images" / "edge" / "many_faces_12.jpg").read_bytes()

            def detect() -> None:
                try:
                    for _ in range(20):
                        outcome.append(stub.DetectFaces(pb.DetectFacesRequest(image=many), metadata=metadata, timeout=60))
                except grpc.RpcError as error:
                    outcome.append(error)

            caller = threading.Thread(target=detect)
            caller.start()
            while busy.cpu_times().user - before < 0.3 and caller.is_alive():
                caller.join(timeout=0.05)  # poll until the worker is visibly at work
            busy.kill()
            caller.join()
            error = outcome[-1]
            assert isinstance(error, grpc.RpcError), "the worker was killed but no call failed"
            assert error.code() == grpc.StatusCode.UNAVAILABLE and error_info(error).reason == "WORKER_RESTARTED"
            assert len(stub.DetectFace(pb.DetectFaceRequest(image=photo("person01_04.jpg")), metadata=metadata).descriptor) == 128
    finally:
        assert service.stop() == 0


def test_busy_ports_are_clear_errors(tmp_path: Path) -> None:
    import socket
    import subprocess

    from tests.helpers import visio_command

    database_url = f"sqlite+aiosqlite:///{tmp_path / 'busy.db'}"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        for flags, hint in ((["--grpc-port", port, "--no-gateway"], "--grpc-port"), (["--grpc-port", "0", "--http-port", port], "")):
            result = subprocess.run(
                visio_command("serve", "--database", database_url, "--workers", "0", "--no-first-key", *flags),
                capture_output=True, text=True, timeout=90, check=False,
            )
            assert result.returncode == 1, result.stderr
            assert result.stderr.startswith("visio: ") or "\nvisio: " in result.stderr
            assert "Traceback" not in result.stderr
            assert hint in result.stderr


def test_a_frozen_worker_is_replaced_and_does_not_block_shutdown(tmp_path: Path) -> None:
    import signal
    import time

    import grpc
    import psutil

    from tests.helpers import error_info
    from visio_grpc._proto.visio.v1 import face_service_pb2 as pb
    from visio_grpc._proto.visio.v1 import face_service_pb2_grpc as pb_grpc

    database_url = f"sqlite+aiosqlite:///{tmp_path / 'frozen.db'}"
    key = create_key(database_url, "frozen")
    service = ServiceProcess(
        database_url, extra_args=("--workers", "1", "--no-gateway"), env={"VISIO_WORKER_TIMEOUT_S": "2"}
    ).start()
    assert service.process is not None
    server = psutil.Process(service.process.pid)
    metadata = (("authorization", key),)
    request = pb.DetectFaceRequest(image=photo("person01_04.jpg"))
    try:
        with grpc.insecure_channel(service.grpc_target) as channel:
            stub = pb_grpc.FaceServiceStub(channel)
            frozen = server.children()[-1]
            frozen.send_signal(signal.SIGSTOP)
            with pytest.raises(grpc.RpcError) as raised:
                stub.DetectFace(request, metadata=metadata, timeout=30)
            assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert error_info(raised.value).reason == "PROCESSING_TIMEOUT"
            assert len(stub.DetectFace(request, metadata=metadata, timeout=30).descriptor) == 128
            assert not frozen.is_running() or frozen.status() == psutil.STATUS_ZOMBIE

            server.children()[-1].send_signal(signal.SIGSTOP)  # frozen again, now while stopping
        started = time.monotonic()
        assert service.stop() == 0
        assert time.monotonic() - started < 20
    finally:
        service.stop()
