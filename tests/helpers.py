"""Test helpers: a running `visio serve` process, a small REST client, rich-status readers."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

IMAGES = Path(__file__).parent / "images"
FACES = IMAGES / "faces"
EDGE = IMAGES / "edge"
EXPECTED = json.loads((FACES / "expected.json").read_text())
READY_LINE = re.compile(r"^visio ready grpc=(\S+):(\d+) http=(?:(\S+):(\d+)|off)$")


def photo(name: str) -> bytes:
    return (FACES / name).read_bytes()


def expected_distance(a: str, b: str) -> float:
    for pair in EXPECTED["pairs"]:
        if {pair["a"], pair["b"]} == {a, b}:
            return float(pair["distance"])
    raise KeyError((a, b))


def visio_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "visio_grpc", *args]


def run_cli(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VISIO_DATABASE_URL": database_url}
    return subprocess.run(visio_command(*args), env=env, capture_output=True, text=True, timeout=60, check=False)


def create_key(database_url: str, owner: str) -> str:
    result = run_cli("keys", "create", "--owner", owner, database_url=database_url)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


@dataclass
class ServiceProcess:
    """`visio serve` in a child process, on free ports, stopped with SIGTERM."""

    database_url: str
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[str] | None = None
    grpc_port: int = 0
    http_port: int = 0
    output: list[str] = field(default_factory=list)
    _reader: threading.Thread = field(init=False, repr=False)

    def start(self, timeout_s: float = 90.0) -> ServiceProcess:
        args = visio_command(
            "serve", "--database", self.database_url, "--grpc-port", "0", "--http-port", "0", *self.extra_args
        )
        self.process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **self.env}
        )
        lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read_output, args=(lines,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:  # the process closed its output: it died
                break
            match = READY_LINE.match(line.strip())
            if match:
                self.grpc_port, self.http_port = int(match.group(2)), int(match.group(4) or 0)
                return self
        self.stop()
        raise RuntimeError("visio serve did not become ready:\n" + "".join(self.output))

    def _read_output(self, lines: queue.Queue[str | None]) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            lines.put(line)
        lines.put(None)

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def stop(self) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # It hung: take its workers and Envoy down too, not just the parent.
                import psutil

                for child in psutil.Process(self.process.pid).children(recursive=True):
                    child.kill()
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=10)
        return self.process.returncode


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def reason(self) -> str:
        """The ErrorInfo reason of a JSON error body."""
        for detail in self.json.get("details", []):
            if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
                return str(detail["reason"])
        raise AssertionError(f"no ErrorInfo in {self.body!r}")

    def error_metadata(self) -> dict[str, str]:
        for detail in self.json.get("details", []):
            if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
                return dict(detail.get("metadata", {}))
        raise AssertionError(f"no ErrorInfo in {self.body!r}")


def multipart(files: dict[str, bytes], fields: dict[str, str] | None = None) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for name, value in (fields or {}).items():
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, data in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        )
        chunks.append(head.encode() + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


@dataclass
class Rest:
    base: str
    key: str | None

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
                headers: dict[str, str] | None = None) -> Response:
        request = urllib.request.Request(self.base + path, data=body, method=method)
        if self.key is not None:
            request.add_header("Authorization", self.key)
        if content_type:
            request.add_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=120) as reply:
                return Response(reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.read())
        except urllib.error.HTTPError as error:
            return Response(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())

    def upload(self, path: str, files: dict[str, bytes], fields: dict[str, str] | None = None,
               method: str = "POST") -> Response:
        body, content_type = multipart(files, fields)
        return self.request(method, path, body, content_type)

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def delete(self, path: str) -> Response:
        return self.request("DELETE", path)

    def post_json(self, path: str, payload: object) -> Response:
        return self.request("POST", path, json.dumps(payload).encode(), "application/json")


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"no rich status on {error!r}"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError(f"no ErrorInfo in {status}")


def bad_request(error: grpc.RpcError) -> error_details_pb2.BadRequest | None:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            violations = error_details_pb2.BadRequest()
            detail.Unpack(violations)
            return violations
    return None
