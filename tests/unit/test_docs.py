"""The README's error table lists every reason the service and the gateway can return."""

from __future__ import annotations

import re
from pathlib import Path

from visio_grpc.api.errors import INTERNAL_REASON, STATUS_OF, status_of

ROOT = Path(__file__).resolve().parents[2]


def _readme_rows() -> dict[str, tuple[str, str]]:
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        match = re.match(r"^\| `([A-Z_]+)` \| ([A-Z_]+) \| (\w+) \|", line)
        if match:
            rows[match.group(1)] = (match.group(2), match.group(3))
    return rows


def test_every_service_reason_is_documented_with_its_statuses() -> None:
    rows = _readme_rows()
    for cls in STATUS_OF:
        if cls.reason == "API_KEY_NOT_FOUND":  # command line only
            continue
        error = cls.__new__(cls)
        code, http = status_of(error)
        assert rows.get(cls.reason) == (code.name, str(http)), cls.reason
    assert rows[INTERNAL_REASON] == ("INTERNAL", "500")


def test_every_gateway_reason_is_documented() -> None:
    gateway_reasons = set(re.findall(r"reason: ([A-Z][A-Z_]+)\b", (ROOT / "envoy.yaml").read_text()))
    assert gateway_reasons, "no reasons found in envoy.yaml"
    assert gateway_reasons <= set(_readme_rows())
