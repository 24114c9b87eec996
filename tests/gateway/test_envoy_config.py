"""The committed envoy.yaml, and the config EnvoyGateway renders from it, pass `envoy --mode validate`."""

from __future__ import annotations

import json
import logging
import re
import subprocess
from pathlib import Path

import yaml

from visio_grpc.gateway import (
    CLUSTER_NAME,
    DEFAULT_DESCRIPTOR_SET,
    DEFAULT_ENVOY_CONFIG,
    JSON_BODY_LIMIT_BYTES,
    LISTENER_NAME,
    MAX_REQUEST_HEADERS_KB,
    GatewayConfig,
    _envoy_line_level,
    find_envoy,
    render_config,
)

ROOT = Path(__file__).resolve().parents[2]


def validate(config_path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_envoy(), "--mode", "validate", "-c", str(config_path), "--log-level", "error"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_committed_envoy_yaml_validates() -> None:
    # As committed, the descriptor path is relative to the repository root.
    result = validate(DEFAULT_ENVOY_CONFIG, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rendered_config_validates(tmp_path: Path) -> None:
    config = GatewayConfig(http_port=0, grpc_port=50123, max_request_bytes=1_000_000, request_timeout_s=7.5)
    rendered = tmp_path / "envoy.yaml"
    rendered.write_text(yaml.safe_dump(render_config(config)))
    # Run from elsewhere: the rendered descriptor path must be absolute.
    result = validate(rendered, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_render_patches_addresses_limits_and_messages() -> None:
    config = GatewayConfig(
        http_host="127.0.0.1", http_port=0, grpc_host="0.0.0.0", grpc_port=50123,
        max_request_bytes=1_000_000, request_timeout_s=7.5,
    )
    document = render_config(config)
    text = yaml.safe_dump(document)
    resources = document["static_resources"]
    listener = next(x for x in resources["listeners"] if x["name"] == LISTENER_NAME)
    cluster = next(x for x in resources["clusters"] if x["name"] == CLUSTER_NAME)
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 0}
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 50123}
    assert f"proto_descriptor: {DEFAULT_DESCRIPTOR_SET.resolve()}" in text
    assert "max_request_body_size: 1000000" in text
    assert "timeout: 7.5s" in text
    assert "limit of 1000000 bytes" in text and "longer than 7.5 s" in text
    assert "44040192" not in text


def test_defaults_match_the_committed_file() -> None:
    # 42 MiB = two 20 MiB images + 2 MiB of multipart framing; 120 s for slow detections.
    text = yaml.safe_dump(render_config(GatewayConfig()))
    assert "max_request_body_size: 44040192" in text
    assert "timeout: 120s" in text
    assert "port_value: 8080" in text and "port_value: 50051" in text


def test_fixed_limits_match_gateway_constants() -> None:
    text = DEFAULT_ENVOY_CONFIG.read_text()
    assert f"local JSON_BODY_LIMIT = {JSON_BODY_LIMIT_BYTES}\n" in text
    assert f'limit_bytes: "{JSON_BODY_LIMIT_BYTES}"' in text
    assert f"max_request_headers_kb: {MAX_REQUEST_HEADERS_KB}\n" in text
    assert f'limit_kb: "{MAX_REQUEST_HEADERS_KB}"' in text
    assert f"limit of {MAX_REQUEST_HEADERS_KB} KiB" in text
    # Rendering with another multipart limit leaves the JSON limit alone.
    rendered = json.dumps(render_config(GatewayConfig(max_request_bytes=1_000_000)))
    assert re.search(rf"limit of {JSON_BODY_LIMIT_BYTES} bytes \(64 KiB\)", rendered)


def test_envoy_shutdown_lines_are_info_and_other_warnings_stay_warnings() -> None:
    sigterm = "[2026-12-03 16:51:59.904][31252][warning][main] [source/server/server.cc:1028] caught ENVOY_SIGTERM"
    assert _envoy_line_level(sigterm) == logging.INFO
    other = "[2026-12-03 16:51:59.904][31252][warning][config] [source/x.cc:1] something odd"
    assert _envoy_line_level(other) == logging.WARNING
    assert _envoy_line_level("[t][1][error][main] [x.cc:1] broken") == logging.ERROR
