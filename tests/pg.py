"""Test helpers: a throwaway PostgreSQL database and a real `mlflow server` process.

PostgreSQL runs on 127.0.0.1:5432 with trust auth. When it is unreachable the tests that need
it skip with the reason, except under CI (env CI=true), where they fail: CI must run them.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipeline.names import PARENT_ATTR, STATE_TAG, TRIAL_TAG, WORKER_ATTR

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
MLFLOW = Path(sys.executable).with_name("mlflow")
SERVER_START_TIMEOUT_S = 90.0


def skip_or_fail(reason: str) -> None:
    """Skip with `reason`; under CI=true fail instead, so a missing service is never hidden."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def _connect(database: str = "postgres"):
    import psycopg

    return psycopg.connect(
        host=PG_HOST,
        port=PG_PORT,
        user=PG_USER,
        dbname=database,
        connect_timeout=3,
        autocommit=True,
    )


def require_postgres() -> None:
    """Skip (or fail under CI) unless PostgreSQL answers on 127.0.0.1:5432."""
    try:
        _connect().close()
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        skip_or_fail(f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT} ({first})")


def url(database: str, user: str = PG_USER, password: str | None = None) -> str:
    secret = f":{password}" if password else ""
    return f"postgresql://{user}{secret}@{PG_HOST}:{PG_PORT}/{database}"


@contextmanager
def database() -> Iterator[str]:
    """A fresh database `pipeline_test_<random>`; yields its name, drops it afterwards."""
    require_postgres()
    name = f"pipeline_test_{secrets.token_hex(6)}"
    admin = _connect()
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def execute(database_name: str, sql: str) -> None:
    """Run one statement on `database_name` (autocommit)."""
    connection = _connect(database_name)
    with connection.cursor() as cursor:
        cursor.execute(sql)
    connection.close()


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


# --- running sweeps and reading their books ------------------------------------------------

SWEEP = [sys.executable, "-m", "pipeline.sweep"]
SMALL = ["objective=value", "train.epochs=300", "study.report_every=100"]


def sweep_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env | extra


def run_sweep(cwd: Path, *overrides: str, timeout: float = 600, **env: str):
    """`python -m pipeline.sweep <overrides>` in `cwd`; the CompletedProcess (text)."""
    return subprocess.run(
        [*SWEEP, *overrides],
        cwd=cwd,
        env=sweep_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _default_sigint() -> None:
    # A shell without job control starts background jobs with SIGINT ignored, and children
    # inherit that; give the sweep the SIGINT a terminal's Ctrl-C would deliver.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_sweep(cwd: Path, *overrides: str, **env: str) -> subprocess.Popen:
    """The sweep as a background process (its own session), stdout/stderr piped as text."""
    return subprocess.Popen(
        [*SWEEP, *overrides],
        preexec_fn=_default_sigint,
        cwd=cwd,
        env=sweep_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def load_study(storage: str, name: str, cwd: Path | None = None):
    """The study through the product's own storage factory (journal path or RDB URL)."""
    from dataclasses import replace

    import optuna

    from pipeline.settings import load
    from pipeline.sweeping.study import make_storage

    if "://" not in storage and cwd is not None:
        storage = str(cwd / storage)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    cfg = replace(load("sweep").study, storage=storage, heartbeat_interval=60)
    return optuna.load_study(study_name=name, storage=make_storage(cfg))


def running_trial(storage: str, name: str, cwd: Path | None = None, pid: int | None = None):
    """A RUNNING trial that has its MLflow run (and, given `pid`, runs in that process)."""
    from optuna.trial import TrialState

    try:
        study = load_study(storage, name, cwd)
    except (KeyError, FileNotFoundError, OSError):
        return None
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = str(t.user_attrs.get(WORKER_ATTR, ""))
        if worker and (pid is None or worker.endswith(f":{pid}")):
            return t
    return None


def trial_run(client, study, number: int):
    """The MLflow run of trial `number` of `study`, found by its tags under the study run (a
    trial's run is made after the trial ends, so no trial attribute names it); None if none."""
    parent = study.user_attrs[PARENT_ATTR]
    experiment = client.get_run(parent).info.experiment_id
    runs = client.search_runs(
        [experiment],
        filter_string=(
            f"tags.`mlflow.parentRunId` = '{parent}' and tags.`optuna.trial_number` = '{number}'"
        ),
    )
    assert len(runs) <= 1, f"trial {number} has {len(runs)} runs"
    return runs[0] if runs else None


def tracking_client(uri: str, cwd: Path | None = None):
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///") and cwd is not None:
        uri = f"sqlite:///{cwd / uri.removeprefix('sqlite:///')}"
    return MlflowClient(tracking_uri=uri)


def assert_books(
    storage: str,
    tracking_uri: str,
    name: str,
    n_trials: int,
    n_workers: int = 1,
    cwd: Path | None = None,
):
    """Optuna and MLflow agree: n_trials finished (≤ n_workers-1 extra), one run per finished
    trial with its number, one parent run, nothing RUNNING anywhere. Returns (study, runs)."""
    from optuna.trial import TrialState

    study = load_study(storage, name, cwd)
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert n_trials <= len(finished) <= n_trials + n_workers - 1, [t.state for t in trials]
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    client = tracking_client(tracking_uri, cwd)
    experiment = client.get_experiment_by_name("pipeline")
    parents = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`pipeline.role` = 'study' and tags.`optuna.study_name` = '{name}'",
    )
    assert len(parents) == 1, [p.info.run_id for p in parents]
    parent = parents[0]
    assert parent.info.run_id == study.user_attrs[PARENT_ATTR]
    assert parent.info.status == "FINISHED"
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
        max_results=10_000,
    )
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    numbers = [int(r.data.tags[TRIAL_TAG]) for r in runs]
    assert len(numbers) == len(set(numbers)), f"a trial logged twice: {sorted(numbers)}"
    by_number = {int(r.data.tags[TRIAL_TAG]): r for r in runs}
    for t in finished:
        run = by_number.get(t.number)
        assert run is not None, f"trial {t.number} has no run"
        assert run.data.tags[STATE_TAG] == t.state.name
        assert run.info.status == "FINISHED"
    return study, runs
