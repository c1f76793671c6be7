"""Throwaway servers for the flows tests: a free loopback port, waiting for a started server to
answer (``wait_until_up``), a PostgreSQL cluster.

``postgres_cluster`` is the body of the ``postgres`` fixture (tests/flows/conftest.py): ``initdb`` +
``pg_ctl`` as the ``postgres`` user, trust auth on loopback, a free port; it skips with the reason
when PostgreSQL's server binaries, that user or root are absent (Debian: ``apt-get install
postgresql``)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, server: subprocess.Popen, timeout_s: float, interval_s: float = 0.5) -> None:
    """Poll ``url`` (GET) until it answers 200; fail the test, with what the server printed when its
    output is a pipe, if ``server`` exits first or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if server.poll() is not None:
            pipe = server.stderr or server.stdout
            printed = pipe.read().decode()[-2000:] if pipe is not None else ""
            pytest.fail(f"the server exited ({server.returncode}) before {url} answered: {printed}")
        if time.monotonic() > deadline:
            pytest.fail(f"{url} did not answer in {timeout_s:.0f} s")
        time.sleep(interval_s)


def _pg_tools() -> tuple[Path, str] | None:
    initdb = shutil.which("initdb") or (str(PG_BIN / "initdb") if (PG_BIN / "initdb").exists() else None)
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return None
    return (Path(initdb).resolve().parent, "postgres") if initdb else None


def postgres_cluster() -> Iterator[str]:
    """``postgresql+psycopg2://postgres@127.0.0.1:PORT/mlflow`` of a fresh cluster, stopped afterwards."""
    tools = _pg_tools()
    if tools is None or os.geteuid() != 0:
        pytest.skip("PostgreSQL server binaries, the postgres user or root (to run them as it) are missing")
    bin_dir, user = tools
    # not under pytest's tmp folder: its parents are private to root, and postgres must traverse them
    root = Path(tempfile.mkdtemp(prefix="loadwise-pg-"))
    shutil.chown(root, user)
    data, port = root / "data", free_port()

    def as_pg(*cmd: str) -> None:
        subprocess.run(["runuser", "-u", user, "--", *cmd], check=True, capture_output=True, timeout=120)

    as_pg(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    as_pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start")
    try:
        as_pg(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow"
    finally:
        as_pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop")
        shutil.rmtree(root, ignore_errors=True)
