"""Every curl example in the README's REST section, run as written against a real service."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ServiceProcess

ROOT = Path(__file__).resolve().parents[2]

# Records each curl call's HTTP status (and the path) beside the output the reader sees.
CURL_RECORDER = r'''
curl() {
  local out status
  out=$(command curl -w '\n%{http_code}' "$@")
  status=${out##*$'\n'}
  printf '%s\n' "${out%$'\n'*}"
  printf '%s %s\n' "$status" "${@: -1}" >> "$STATUSES"
}
'''


def readme_rest_script() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## REST API"):readme.index("## Photos Visio accepts")]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    script = "\n".join(blocks)
    return "\n".join(line for line in script.splitlines() if not line.startswith("export KEY=") and not line.startswith("export URL="))


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_every_readme_curl_example_works(service: ServiceProcess, alice_key: str, tmp_path: Path) -> None:
    statuses = tmp_path / "statuses"
    script = "set -euo pipefail\n" + CURL_RECORDER + readme_rest_script()
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "KEY": alice_key, "URL": service.http_base, "STATUSES": str(statuses)},
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    calls = [line.split(" ", 1) for line in statuses.read_text().splitlines()]
    assert len(calls) >= 15
    for status, path in calls:
        # The README's placeholder token is the one call documented to fail.
        expected = "400" if "page_token=TOKEN" in path else "200"
        assert status == expected, (status, path, result.stdout[-2000:])
    assert '"match":true' in result.stdout and '"match":false' in result.stdout
    assert '"deleted":true' in result.stdout
