"""Test helpers: a private PostgreSQL server of the test's own (initdb on a free port), so a
test can really restart it without cutting off anyone else using the shared one on 5432.

Needs PostgreSQL's server programs (initdb, pg_ctl: PATH or /usr/lib/postgresql/*/bin), present
wherever the shared server is installed; without them the test skips (fails under CI=true).
As root the server runs as the `postgres` user (initdb refuses root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pg
from servers import free_port


def _bin_dir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found and Path(found).resolve().with_name("initdb").exists():
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: p.parts)
    return versions[-1].parent if versions else None


class Cluster:
    """A running PostgreSQL server on 127.0.0.1:`port` (trust auth, user postgres)."""

    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin_dir, self.root, self.port = bin_dir, root, free_port()
        self.data, self.log = root / "data", root / "server.log"
        self._as_postgres = os.geteuid() == 0

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{program} {' '.join(args)}: {done.stderr[-2000:]}\n{log}")

    def init_and_start(self) -> None:
        if self._as_postgres:
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def restart(self) -> None:
        """A real restart (`pg_ctl restart -m fast`): every session is cut, the server is down
        for a moment and comes back on the same port; returns once it accepts connections."""
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-m", "fast", "-w", "restart"
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def create_database(self, name: str) -> str:
        """A database `name` on this server; returns its URL."""
        import psycopg

        admin = psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        )
        with admin, admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"


@contextmanager
def private_cluster() -> Iterator[Cluster]:
    """A fresh PostgreSQL server, stopped and deleted afterwards whatever happens."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        pg.skip_or_fail("PostgreSQL's server programs (initdb, pg_ctl) are not installed")
    root = Path(tempfile.mkdtemp(prefix="pipeline-pg-"))
    cluster = Cluster(bin_dir, root)
    try:
        cluster.init_and_start()
        yield cluster
    finally:
        if (cluster.data / "postmaster.pid").exists():
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
