"""Settings precedence (defaults < VISIO_* environment < flags) and clear errors for bad values."""

from __future__ import annotations

import pytest

from visio_grpc.cli import _parser, _settings, main
from visio_grpc.config import Settings


def test_flags_override_environment_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().grpc_port == 50051 and Settings().host == "127.0.0.1"
    monkeypatch.setenv("VISIO_GRPC_PORT", "6000")
    monkeypatch.setenv("VISIO_MATCH_THRESHOLD", "0.5")
    assert Settings().grpc_port == 6000
    settings = _settings(_parser().parse_args(["serve", "--grpc-port", "7000", "--no-gateway"]))
    assert settings.grpc_port == 7000 and settings.match_threshold == 0.5 and settings.gateway is False


def test_bad_settings_are_reported_without_a_traceback(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VISIO_DETECT_MAX_SIDE", "3000")
    assert main(["keys", "list"]) == 2
    error = capsys.readouterr().err
    assert "VISIO_DESCRIPTOR_MAX_SIDE must be at least VISIO_DETECT_MAX_SIDE" in error and "Traceback" not in error
    monkeypatch.setenv("VISIO_DETECT_MAX_SIDE", "1024")
    monkeypatch.setenv("VISIO_MAX_IMAGE_BYTES", "-1")
    assert main(["keys", "list"]) == 2
    assert "max_image_bytes" in capsys.readouterr().err
