"""Runs scripts/fuzz_upload.py for a few seconds so CI exercises the fuzzer and the upload path."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_fuzz_upload_smoke() -> None:
    completed = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "fuzz_upload.py"), "--seconds", "4", "--max-rss-mb", "1024"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    summary = re.search(r"fuzz: (\d+) inputs, (\d+) failures in \d+ s", completed.stdout)
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    assert summary is not None, completed.stdout
    assert int(summary.group(1)) > 50
    assert summary.group(2) == "0"
