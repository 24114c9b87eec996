"""The REST contract of the Envoy gateway: a real EnvoyGateway in front of a canned FaceService."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from visio_grpc._proto.visio.v1 import face_service_pb2 as pb
from visio_grpc._proto.visio.v1 import face_service_pb2_grpc as pb_grpc
from visio_grpc.gateway import (
    HTTP_STATUS_METADATA_KEY,
    JSON_BODY_LIMIT_BYTES,
    MAX_REQUEST_HEADERS_KB,
    NEXT_PAGE_TOKEN_HEADER,
    EnvoyGateway,
    GatewayConfig,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

DOMAIN = "visio.dev"
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
BODY_LIMIT = 128 * 1024  # small, so the over-limit test sends little; above the 64 KiB JSON limit
TIMEOUT_S = 1.0
SLOW_S = 3.0
IN_FLIGHT_S = 1.0  # GetFace("in-flight"): a call still running when the gateway is stopped
INVALID_ARGUMENT, NOT_FOUND, DEADLINE_EXCEEDED, UNIMPLEMENTED, UNAVAILABLE = 3, 5, 4, 12, 14
POST_ONLY_PATHS = ["/v1/faces/compare", "/v1/faces/compare-images", "/v1/faces/compare-mixt", "/v1/faces/detect", "/v1/faces/detect-all"]


def abort_args(code: grpc.StatusCode, message: str, reason: str, http_status: int | None = None, **metadata: str):
    """What the real error mapping passes to context.abort: rich status, plus the REST status override."""
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata))
    status = rpc_status.to_status(status_pb2.Status(code=code.value[0], message=message, details=[info]))
    trailing = tuple(status.trailing_metadata)
    if http_status is not None:
        trailing += ((HTTP_STATUS_METADATA_KEY, str(http_status)),)
    return status.code, status.details, trailing


class CannedFaceService(pb_grpc.FaceServiceServicer):
    """Fixed answers and errors: these tests are about what Envoy does with them."""

    async def GetFace(self, request: pb.GetFaceRequest, context: grpc.aio.ServicerContext) -> pb.Face:
        if request.id == "slow":
            await asyncio.sleep(SLOW_S)
        if request.id == "in-flight":
            await asyncio.sleep(IN_FLIGHT_S)
        if request.id == "missing":
            await context.abort(*abort_args(grpc.StatusCode.NOT_FOUND, "No face 'missing'.", "FACE_NOT_FOUND", face_id="missing"))
        return pb.Face(id=request.id)

    async def ListFaces(self, request: pb.ListFacesRequest, context: grpc.aio.ServicerContext) -> pb.ListFacesResponse:
        if request.page_token == "":
            return pb.ListFacesResponse(faces=[pb.Face(id="a"), pb.Face(id="b")], next_page_token="page-2")
        return pb.ListFacesResponse()

    async def CompareFaces(self, request: pb.CompareFacesRequest, context: grpc.aio.ServicerContext) -> pb.Comparison:
        return pb.Comparison(distance=0.0, threshold=0.6, match=False)

    async def CreateFace(self, request: pb.CreateFaceRequest, context: grpc.aio.ServicerContext) -> pb.Face:
        # Echoes what arrived, so the test can see the raw upload.
        return pb.Face(id=request.upload.content_type, image_size=pb.ImageSize(width=len(request.upload.data)))

    async def UpdateFace(self, request: pb.UpdateFaceRequest, context: grpc.aio.ServicerContext) -> pb.Face:
        await context.abort(
            *abort_args(grpc.StatusCode.INVALID_ARGUMENT, "'face' is too large.", "IMAGE_TOO_LARGE", 413, field="face")
        )

    async def DetectFace(self, request: pb.DetectFaceRequest, context: grpc.aio.ServicerContext) -> pb.DetectedFace:
        await context.abort(
            *abort_args(grpc.StatusCode.INVALID_ARGUMENT, "'face' is a HEIC image.", "IMAGE_UNSUPPORTED_FORMAT", 415)
        )


@dataclass
class Stack:
    gateway: EnvoyGateway
    grpc_port: int


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack() -> AsyncIterator[Stack]:
    # As the real server: metadata up to 64 KiB, above Envoy's 32 KiB request-header limit.
    server = grpc.aio.server(options=[("grpc.max_metadata_size", 64 * 1024)])
    pb_grpc.add_FaceServiceServicer_to_server(CannedFaceService(), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    config = GatewayConfig(
        http_port=0, grpc_port=grpc_port, max_request_bytes=BODY_LIMIT, request_timeout_s=TIMEOUT_S
    )
    try:
        async with EnvoyGateway(config) as gateway:
            yield Stack(gateway, grpc_port)
    finally:
        await server.stop(None)


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> object:
        assert self.headers["content-type"] == "application/json", self.headers
        return json.loads(self.body)


async def call(port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Reply:
    # In a thread: the gRPC server under test runs on this event loop.
    def blocking() -> Reply:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            connection.close()

    return await asyncio.to_thread(blocking)


def multipart(field: str, filename: str, data: bytes, boundary: str = "visio-test-boundary") -> tuple[bytes, str]:
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
        f"Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def assert_error(reply: Reply, http_status: int, code: int, reason: str) -> dict:
    assert reply.status == http_status, reply.body
    body = reply.json()
    assert isinstance(body, dict)
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    [info] = body["details"]
    assert info["@type"] == ERROR_INFO
    assert info["reason"] == reason
    assert info["domain"] == DOMAIN
    assert isinstance(info["metadata"], dict)
    return body


async def test_transcoded_rich_error_has_status_shape_and_error_info(stack: Stack) -> None:
    reply = await call(stack.gateway.port, "GET", "/v1/faces/missing")
    body = assert_error(reply, 404, NOT_FOUND, "FACE_NOT_FOUND")
    assert body["message"] == "No face 'missing'."
    assert body["details"][0]["metadata"] == {"face_id": "missing"}


async def test_http_status_override_413_keeps_invalid_argument(stack: Stack) -> None:
    data, content_type = multipart("face", "big.jpg", b"x" * 100)
    reply = await call(stack.gateway.port, "PUT", "/v1/faces/f1", data, {"Content-Type": content_type})
    assert_error(reply, 413, INVALID_ARGUMENT, "IMAGE_TOO_LARGE")
    assert HTTP_STATUS_METADATA_KEY not in reply.headers


async def test_http_status_override_415(stack: Stack) -> None:
    data, content_type = multipart("face", "face.heic", b"x" * 100)
    reply = await call(stack.gateway.port, "POST", "/v1/faces/detect", data, {"Content-Type": content_type})
    assert_error(reply, 415, INVALID_ARGUMENT, "IMAGE_UNSUPPORTED_FORMAT")
    assert HTTP_STATUS_METADATA_KEY not in reply.headers


async def test_body_over_limit_is_413_json(stack: Stack) -> None:
    data, content_type = multipart("face", "huge.jpg", b"x" * (2 * BODY_LIMIT))
    reply = await call(stack.gateway.port, "POST", "/v1/faces", data, {"Content-Type": content_type})
    body = assert_error(reply, 413, INVALID_ARGUMENT, "REQUEST_TOO_LARGE")
    assert body["details"][0]["metadata"] == {"limit_bytes": str(BODY_LIMIT)}
    assert str(BODY_LIMIT) in body["message"]


@pytest.mark.parametrize(("method", "path"), [("GET", "/v2/nothing"), ("PATCH", "/v1/faces/f1")])
async def test_unknown_path_or_method_is_404_json(stack: Stack, method: str, path: str) -> None:
    reply = await call(stack.gateway.port, method, path + "?x=1")
    body = assert_error(reply, 404, NOT_FOUND, "ROUTE_NOT_FOUND")
    assert body["details"][0]["metadata"] == {"method": method, "path": path}


async def test_unknown_query_parameter_is_400_json(stack: Stack) -> None:
    reply = await call(stack.gateway.port, "GET", "/v1/faces?colour=red")
    body = assert_error(reply, 400, INVALID_ARGUMENT, "REQUEST_PARAMETER_INVALID")
    assert "colour" in body["message"]


async def test_malformed_json_is_400_json(stack: Stack) -> None:
    reply = await call(
        stack.gateway.port, "POST", "/v1/faces/compare", b'{"face_1": "a",', {"Content-Type": "application/json"}
    )
    assert_error(reply, 400, INVALID_ARGUMENT, "REQUEST_BODY_MALFORMED")


async def test_slow_backend_is_504_json(stack: Stack) -> None:
    reply = await call(stack.gateway.port, "GET", "/v1/faces/slow")
    body = assert_error(reply, 504, DEADLINE_EXCEEDED, "GATEWAY_TIMEOUT")
    assert body["details"][0]["metadata"] == {"timeout_seconds": "1"}


async def test_list_faces_is_an_array_with_next_page_token_header(stack: Stack) -> None:
    reply = await call(stack.gateway.port, "GET", "/v1/faces")
    assert reply.status == 200
    faces = reply.json()
    assert [face["id"] for face in faces] == ["a", "b"]
    assert reply.headers[NEXT_PAGE_TOKEN_HEADER] == "page-2"
    assert int(reply.headers["content-length"]) == len(reply.body)
    assert "grpc-status" not in reply.headers


async def test_last_page_is_empty_array_without_token(stack: Stack) -> None:
    reply = await call(stack.gateway.port, "GET", "/v1/faces?page_token=page-2&page_size=10")
    assert reply.status == 200
    assert reply.body == b"[]"
    assert NEXT_PAGE_TOKEN_HEADER not in reply.headers


async def test_zero_and_false_are_printed(stack: Stack) -> None:
    reply = await call(
        stack.gateway.port, "POST", "/v1/faces/compare", b'{"face_1": "a", "face_2": "b"}',
        {"Content-Type": "application/json"},
    )
    assert reply.status == 200
    assert reply.json() == {"distance": 0, "threshold": 0.6, "match": False}


async def test_multipart_arrives_raw_with_full_content_type(stack: Stack) -> None:
    data, content_type = multipart("face", "face.jpg", bytes(range(256)) * 40)
    reply = await call(stack.gateway.port, "POST", "/v1/faces", data, {"Content-Type": content_type})
    assert reply.status == 200, reply.body
    face = reply.json()
    assert face["id"] == content_type
    assert face["image_size"]["width"] == len(data)


async def test_native_grpc_through_the_same_port(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.gateway.port}") as channel:
        stub = pb_grpc.FaceServiceStub(channel)
        page = await stub.ListFaces(pb.ListFacesRequest(), timeout=5)
        assert [face.id for face in page.faces] == ["a", "b"] and page.next_page_token == "page-2"

        health_reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health_reply.status == health_pb2.HealthCheckResponse.SERVING

        # The REST status override must not leak into gRPC: HTTP 200 + grpc-status, rich details intact.
        call_ = stub.UpdateFace(pb.UpdateFaceRequest(id="f1", image=b"x"), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call_
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(raised.value)
        assert status is not None
        info = error_details_pb2.ErrorInfo()
        assert status.details[0].Unpack(info) and info.reason == "IMAGE_TOO_LARGE"
        trailing = {key for key, _ in (raised.value.trailing_metadata() or ())}
        assert HTTP_STATUS_METADATA_KEY not in trailing


async def test_backend_down_is_503_json() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    async with EnvoyGateway(GatewayConfig(http_port=0, grpc_port=dead_port)) as gateway:
        reply = await call(gateway.port, "GET", "/v1/faces/f1")
        assert_error(reply, 503, UNAVAILABLE, "BACKEND_UNAVAILABLE")

        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await pb_grpc.FaceServiceStub(channel).GetFace(pb.GetFaceRequest(id="f1"), timeout=5)
        # Native clients get a plain UNAVAILABLE, not the REST JSON.
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert not raised.value.details().startswith("{")


async def test_start_failure_reports_envoy_stderr(tmp_path) -> None:
    broken = tmp_path / "envoy.yaml"
    broken.write_text((GatewayConfig().envoy_config.read_text()).replace("grpc_json_transcoder.v3.GrpcJsonTranscoder", "Nope"))
    from visio_grpc.gateway import GatewayError

    with pytest.raises(GatewayError, match="exited with code"):
        await EnvoyGateway(GatewayConfig(http_port=0, envoy_config=broken)).start()


def raw_exchange(port: int, head: bytes, body_chunks: list[bytes]) -> tuple[float, bytes]:
    """Sends a request head and body chunks (stopping when Envoy resets); returns (seconds, reply)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        try:
            sock.sendall(head)
            for chunk in body_chunks:
                sock.sendall(chunk)
        except OSError:  # Envoy answered and closed before reading everything: expected
            pass
        reply = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in reply or len(reply.partition(b"\r\n\r\n")[2]) < _content_length(reply):
                data = sock.recv(65536)
                if not data:
                    break
                reply += data
        return time.monotonic() - started, reply


def _content_length(reply: bytes) -> int:
    for line in reply.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 1 << 62


def parse_raw(reply: bytes) -> Reply:
    head, _, body = reply.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = http.client.HTTPMessage()
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    return Reply(int(status_line.split()[1]), headers, body)


def assert_json_too_large(reply: Reply) -> None:
    body = assert_error(reply, 413, INVALID_ARGUMENT, "REQUEST_TOO_LARGE")
    assert body["details"][0]["metadata"] == {"limit_bytes": str(JSON_BODY_LIMIT_BYTES)}
    assert "JSON" in body["message"] and "64 KiB" in body["message"], body["message"]
    assert str(BODY_LIMIT) not in body["message"]


@pytest.mark.parametrize("path", ["/v1/faces/compare", "/v1/faces/compare?x=1"])
async def test_json_body_over_64k_with_content_length_is_413_at_once(stack: Stack, path: str) -> None:
    # 50 MB announced, 1 MB sent: Envoy must answer from the Content-Length, not parse the body.
    head = (
        f"POST {path} HTTP/1.1\r\nHost: visio\r\nContent-Type: application/json\r\n"
        f"Content-Length: {50 * 1024 * 1024}\r\n\r\n"
    ).encode()
    seconds, reply = await asyncio.to_thread(raw_exchange, stack.gateway.port, head, [b"0" * 65536] * 16)
    assert_json_too_large(parse_raw(reply))
    assert seconds < 2.0


async def test_chunked_json_body_over_64k_is_413(stack: Stack) -> None:
    head = (
        b"POST /v1/faces/compare HTTP/1.1\r\nHost: visio\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"0" * (1024 * 1024)
    chunks = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 8 + [b"0\r\n\r\n"]
    seconds, reply = await asyncio.to_thread(raw_exchange, stack.gateway.port, head, chunks)
    assert_json_too_large(parse_raw(reply))
    assert seconds < 2.0

    # Just over the limit, and complete (below Envoy's own buffer limit): the Lua check itself.
    body = b'{"face_1": "a", "face_2": "' + b"b" * JSON_BODY_LIMIT_BYTES + b'"}'
    _, reply = await asyncio.to_thread(raw_exchange, stack.gateway.port, head, [b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)])
    assert_json_too_large(parse_raw(reply))


async def test_small_chunked_json_body_still_works(stack: Stack) -> None:
    head = (
        b"POST /v1/faces/compare HTTP/1.1\r\nHost: visio\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    body = b'{"face_1": "a", "face_2": "b"}'
    _, reply = await asyncio.to_thread(raw_exchange, stack.gateway.port, head, [b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)])
    parsed = parse_raw(reply)
    assert parsed.status == 200, reply
    assert parsed.json() == {"distance": 0, "threshold": 0.6, "match": False}


async def test_multipart_route_keeps_the_big_limit(stack: Stack) -> None:
    data, content_type = multipart("face", "face.jpg", b"x" * (JSON_BODY_LIMIT_BYTES + 10_000))
    assert len(data) < BODY_LIMIT
    reply = await call(stack.gateway.port, "POST", "/v1/faces", data, {"Content-Type": content_type})
    assert reply.status == 200, reply.body
    assert reply.json()["image_size"]["width"] == len(data)


async def test_list_faces_with_trailing_slash_is_the_same_array(stack: Stack) -> None:
    reply = await call(stack.gateway.port, "GET", "/v1/faces/?page_size=1")
    assert reply.status == 200, reply.body
    assert [face["id"] for face in reply.json()] == ["a", "b"]
    assert reply.headers[NEXT_PAGE_TOKEN_HEADER] == "page-2"
    assert int(reply.headers["content-length"]) == len(reply.body)


@pytest.mark.parametrize(
    ("what", "path", "headers"),
    [
        ("url", "/v1/faces/" + "a" * 40_000, {}),
        ("url", "/v1/faces/" + "a" * 16_000 + "?page_size=" + "1" * 20_000, {}),
        ("header", "/v1/faces/f1", {"Authorization": "a" * 60_000}),
        ("headers", "/v1/faces/f1", {f"X-Filler-{i}": "b" * 4000 for i in range(10)}),
    ],
)
async def test_oversized_url_or_headers_is_431_json(stack: Stack, what: str, path: str, headers: dict[str, str]) -> None:
    reply = await call(stack.gateway.port, "GET", path, headers=headers)
    body = assert_error(reply, 431, INVALID_ARGUMENT, "REQUEST_HEADERS_TOO_LARGE")
    assert body["details"][0]["metadata"] == {"limit_kb": str(MAX_REQUEST_HEADERS_KB)}
    assert "URL" in body["message"] and "headers" in body["message"]
    assert "metadata" not in body["message"]  # not gRPC core's own text


@pytest.mark.parametrize(
    ("path", "headers"),
    [("/v1/faces/" + "a" * 30_000, {}), ("/v1/faces/f1", {"Authorization": "a" * 30_000})],
)
async def test_long_url_or_header_below_the_limit_reaches_the_server(stack: Stack, path: str, headers: dict[str, str]) -> None:
    # Envoy copies the path into x-envoy-original-path: the metadata must still fit the server's limit.
    reply = await call(stack.gateway.port, "GET", path, headers=headers)
    assert reply.status == 200, reply.body[:300]
    assert reply.json()["id"] == path.removeprefix("/v1/faces/")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize("path", POST_ONLY_PATHS)
async def test_other_methods_on_post_only_paths_are_405_json(stack: Stack, method: str, path: str) -> None:
    reply = await call(stack.gateway.port, method, path + "?page_size=1")
    body = assert_error(reply, 405, UNIMPLEMENTED, "METHOD_NOT_ALLOWED")
    assert reply.headers["allow"] == "POST"
    assert body["details"][0]["metadata"] == {"method": method, "path": path, "allowed_methods": "POST"}
    assert "use POST" in body["message"] and "No face" not in body["message"]


async def test_get_face_with_a_similar_id_is_still_a_face(stack: Stack) -> None:
    reply = await call(stack.gateway.port, "GET", "/v1/faces/compare-2")
    assert reply.status == 200 and reply.json()["id"] == "compare-2"


async def test_stop_drains_in_flight_rest_calls(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    gateway = EnvoyGateway(GatewayConfig(http_port=0, grpc_port=stack.grpc_port, request_timeout_s=10, drain_timeout_s=5))
    await gateway.start()
    port = gateway.port
    assert port is not None
    with caplog.at_level(logging.INFO, logger="visio.envoy"):
        started = time.monotonic()
        in_flight = asyncio.create_task(call(port, "GET", "/v1/faces/in-flight"))
        await asyncio.sleep(0.3)  # the call has reached the servicer
        stopping = asyncio.create_task(gateway.stop())
        await asyncio.sleep(0.2)
        # New connections during the drain are refused (the listener is closed).
        with pytest.raises(ConnectionRefusedError):
            await call(port, "GET", "/v1/faces/f1")
        assert not stopping.done()
        reply = await in_flight
        await stopping
        elapsed = time.monotonic() - started
    assert reply.status == 200, reply.body
    assert reply.json()["id"] == "in-flight"
    assert reply.headers["connection"] == "close"  # keep-alive clients are told to go
    assert IN_FLIGHT_S <= elapsed < IN_FLIGHT_S + 2.0
    assert gateway.pid is None
    # A clean stop logs nothing above INFO for Envoy.
    envoy_records = [record for record in caplog.records if record.name == "visio.envoy"]
    assert all(record.levelno <= logging.INFO for record in envoy_records), [r.getMessage() for r in envoy_records]


async def test_stop_without_calls_in_flight_is_quick(stack: Stack) -> None:
    gateway = EnvoyGateway(GatewayConfig(http_port=0, grpc_port=stack.grpc_port))
    await gateway.start()
    started = time.monotonic()
    await gateway.stop()
    assert time.monotonic() - started < 1.0

