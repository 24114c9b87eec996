"""PostgreSQL, the way Visio scales: two stateless replicas (each with its gateway) on one database.

Runs against a throw-away PostgreSQL cluster made with the machine's initdb/pg_ctl.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Rest, ServiceProcess, create_key, photo

INITDB = shutil.which("initdb") or "/usr/lib/postgresql/15/bin/initdb"
PG_CTL = shutil.which("pg_ctl") or "/usr/lib/postgresql/15/bin/pg_ctl"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_postgres(args: list[str]) -> list[str]:
    # initdb refuses to run as root; CI runs as root, so use the postgres account there.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    if not Path(INITDB).exists() or not Path(PG_CTL).exists():
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    # Not under pytest's tmp folder: the postgres account cannot enter root's private folders.
    scratch = Path(tempfile.mkdtemp(prefix="visio-pg-"))
    scratch.chmod(0o755)
    data = scratch / "data"
    data.mkdir()
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(data, user.pw_uid, user.pw_gid)
    port = _free_port()
    subprocess.run(_as_postgres([INITDB, "-D", str(data), "-U", "visio", "--auth=trust", "-E", "UTF8"]),
                   check=True, capture_output=True)
    subprocess.run(
        _as_postgres([PG_CTL, "-D", str(data), "-w", "-l", str(data / "server.log"),
                      "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start"]),
        check=True, capture_output=True,
    )
    try:
        yield f"postgresql+asyncpg://visio@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres([PG_CTL, "-D", str(data), "-m", "fast", "stop"]), capture_output=True, check=False)
        shutil.rmtree(scratch, ignore_errors=True)


def test_two_replicas_share_one_database(postgres_url: str) -> None:
    key = create_key(postgres_url, "scaled")
    first = ServiceProcess(postgres_url, extra_args=("--workers", "1")).start()
    second = ServiceProcess(postgres_url, extra_args=("--workers", "0")).start()
    try:
        a, b = Rest(first.http_base, key), Rest(second.http_base, key)
        created = a.upload("/v1/faces", {"face": photo("person05_01.jpg")})
        assert created.status == 200, created.body
        other = b.upload("/v1/faces", {"face": photo("person05_02.jpg")})
        assert other.status == 200, other.body
        assert b.get(f"/v1/faces/{created.json['id']}").json["descriptor"] == created.json["descriptor"]
        compared = b.post_json("/v1/faces/compare", {"face_1": created.json["id"], "face_2": other.json["id"]})
        assert compared.status == 200 and compared.json["match"] is True
        listed = a.get("/v1/faces?page_size=1")
        assert len(listed.json) == 1 and listed.headers.get("x-next-page-token")
        assert b.delete(f"/v1/faces/{created.json['id']}").status == 200
        assert a.get(f"/v1/faces/{created.json['id']}").status == 404
    finally:
        assert first.stop() == 0
        assert second.stop() == 0
