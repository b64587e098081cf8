"""Test helpers: a real `mlflow server` process over a PostgreSQL database (see `pg`), free
loopback ports and polling with a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pg import database, url

MLFLOW = Path(sys.executable).with_name("mlflow")
SERVER_START_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def wait_until(condition, timeout: float, what: str, interval: float = 0.2):
    """Poll `condition()` until it returns something truthy (returned) or fail at `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class MlflowServer:
    """`mlflow server` on a free port over a PostgreSQL database; `uri` is its http address."""

    def __init__(
        self,
        database_name: str,
        artifacts: Path,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = artifacts.parent / f"mlflow-server-{self.port}.log"
        self._log_file = open(self.log, "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [
                str(MLFLOW),
                "server",
                "--backend-store-uri",
                url(database_name),  # plain, as the README writes it: SQLAlchemy picks psycopg 3
                "--artifacts-destination",
                str(artifacts),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "2",
            ],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
        self.started_in = 0.0

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"mlflow server exited: {self.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def wait_healthy(self) -> None:
        start = time.monotonic()
        wait_until(self._healthy, SERVER_START_TIMEOUT_S, "mlflow server /health", 0.25)
        self.started_in = time.monotonic() - start

    def kill(self) -> None:
        """SIGKILL the server and its workers (a crash, not a shutdown); the port is free after."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        wait_until(lambda: _port_free(self.port), 30, f"port {self.port} to close")
        self._log_file.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        self._log_file.close()


@contextmanager
def mlflow_server(
    tmp: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[str, MlflowServer]]:
    """A database for MLflow plus a server over it (in `env`, default this process's):
    yields (database name, server)."""
    with database() as name:
        server = MlflowServer(name, tmp / "artifacts", env)
        try:
            server.wait_healthy()
            yield name, server
        finally:
            server.stop()
