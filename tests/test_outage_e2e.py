"""Tracking-server outages end to end: finished trials wait in a local spool and reach MLflow
when it is back; nothing is lost, nothing recorded twice, and training never waits on MLflow.

The tests run real `mlflow server` processes over PostgreSQL, kill them (SIGKILL, a crash) and
start them again on the same port; sweeps are real `python -m pipeline.sweep` subprocesses.
Waits poll the stores with deadlines; the one timed wait is an outage's length. The spool and
its sending on their own: test_spool.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pg
import pytest
import servers
import sweeps
from optuna.trial import TrialState
from sweeping import NARROW_SPACE, RUN_PLOTS, artifact_paths

from pipeline.names import PARENT_ATTR, STATE_TAG

JOURNAL = "mlruns/optuna.journal"
SPOOL = "mlruns/spool"
RETRY_NOISE = re.compile(r"Retrying \(|urllib3|Max retries|connectionpool|View run", re.I)

# --- real servers: killed, restarted, never back ----------------------------------------------


def start_server(db: str, tmp_path: Path, port: int | None = None) -> servers.MlflowServer:
    server = servers.MlflowServer(db, tmp_path / "artifacts", port=port)
    server.wait_healthy()
    return server


def finished(cwd: Path) -> int:
    try:
        study = sweeps.load_study(JOURNAL, "log-value", cwd)
    except (KeyError, FileNotFoundError, OSError):
        return 0
    return len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)))


def spooled(cwd: Path) -> int:
    return len(list((cwd / SPOOL).glob("*.rec")))


def sweep_args(server: servers.MlflowServer, n_trials: int, outage_timeout: float) -> list[str]:
    return [
        *sweeps.SMALL,
        *NARROW_SPACE,
        "train.epochs=100000",  # about a second a trial: trials go on while MLflow is away
        "study.report_every=10000",
        "train.log_every=500",
        "study.pruner.name=none",
        f"study.n_trials={n_trials}",
        f"tracking.uri={server.uri}",
        f"tracking.outage_timeout={outage_timeout}",
    ]


def alive(process: subprocess.Popen) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"the sweep ended early: {process.communicate()[1][-3000:]}")
    return True


def finish(process: subprocess.Popen, timeout: float = 600) -> subprocess.CompletedProcess:
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def assert_complete_runs(cwd: Path, uri: str, n_trials: int):
    """Every finished trial: exactly one FINISHED run with its history, plots and tags."""
    study, runs = sweeps.assert_books(JOURNAL, uri, "log-value", n_trials, cwd=cwd)
    client = sweeps.tracking_client(uri)
    for run in runs:
        if run.data.tags[STATE_TAG] == "FAIL":
            continue
        assert len(client.get_metric_history(run.info.run_id, "loss")) > 2
        assert {"val_value_mse", "val_deriv_mse", "objective_value"} <= set(run.data.metrics)
        assert artifact_paths(client, run.info.run_id) >= RUN_PLOTS
        assert run.data.params["objective"] == "value"
    assert spooled(cwd) == 0, "the spool is empty once MLflow has everything"
    return study, runs


def assert_quiet(result: subprocess.CompletedProcess) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-3000:]
    noise = [line for line in output.splitlines() if RETRY_NOISE.search(line)]
    assert not noise, noise[:5]


@pytest.fixture
def mlflow_db():
    with pg.database() as name:
        yield name


@pytest.mark.slow
@pytest.mark.postgres
def test_a_server_killed_and_back_20_s_later_costs_no_trial(tmp_path, mlflow_db):
    server = start_server(mlflow_db, tmp_path)
    sweep = sweeps.start_sweep(tmp_path, *sweep_args(server, n_trials=12, outage_timeout=240))
    try:
        servers.wait_until(lambda: alive(sweep) and finished(tmp_path) >= 3, 300, "3 trials")
        server.kill()
        killed = time.time()
        servers.wait_until(lambda: alive(sweep) and spooled(tmp_path) >= 2, 120, "records spooled")
        time.sleep(max(0.0, killed + 20 - time.time()))  # the outage's length is the scenario
        server = start_server(mlflow_db, tmp_path, port=server.port)
        back = time.time()
        result = finish(sweep)
        assert result.returncode == 0, result.stderr[-3000:]
        study, runs = assert_complete_runs(tmp_path, server.uri, 12)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
        server.stop()
    assert_quiet(result)
    assert result.stdout.count("is not answering") == 1  # said once, not per retry
    assert not study.get_trials(states=(TrialState.FAIL,))
    assert len(runs) == 12
    during = [t for t in study.trials if killed < t.datetime_complete.timestamp() < back]
    assert during, "trials went on finishing while MLflow was away"


@pytest.mark.slow
@pytest.mark.postgres
def test_a_server_down_for_good_stops_the_sweep_cleanly_and_the_rerun_sends_the_spool(
    tmp_path, mlflow_db
):
    server = start_server(mlflow_db, tmp_path)
    args = sweep_args(server, n_trials=6, outage_timeout=15)
    sweep = sweeps.start_sweep(tmp_path, *args)
    try:
        servers.wait_until(lambda: alive(sweep) and finished(tmp_path) >= 2, 300, "2 trials")
        server.kill()
        killed = time.monotonic()
        result = finish(sweep, timeout=300)
        stopped_after = time.monotonic() - killed
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    assert result.returncode == 1, result.stderr[-3000:]
    assert_quiet(result)
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr[-3000:]
    waiting = spooled(tmp_path)
    assert waiting >= 1
    assert server.uri in errors[0] and f"holds {waiting} record" in errors[0]
    assert "rerun the same command" in errors[0]
    assert stopped_after < 15 + 30, f"stopped {stopped_after:.0f} s after the server died"

    server = start_server(mlflow_db, tmp_path, port=server.port)
    try:
        again = sweeps.run_sweep(tmp_path, *args)
        assert again.returncode == 0, again.stderr[-3000:]
        assert_quiet(again)
        assert f"sent {waiting} finished trials' records" in again.stdout
        assert_complete_runs(tmp_path, server.uri, 6)
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.postgres
def test_a_sweep_killed_with_records_spooled_leaves_them_for_the_rerun(tmp_path, mlflow_db):
    server = start_server(mlflow_db, tmp_path)
    args = sweep_args(server, n_trials=6, outage_timeout=240)
    sweep = sweeps.start_sweep(tmp_path, *args)
    try:
        servers.wait_until(lambda: alive(sweep) and finished(tmp_path) >= 2, 300, "2 trials")
        server.kill()
        servers.wait_until(lambda: alive(sweep) and spooled(tmp_path) >= 2, 120, "records spooled")
        os.killpg(sweep.pid, signal.SIGKILL)  # the sweep and its recording process
        sweep.communicate()
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    waiting = spooled(tmp_path)
    assert waiting >= 2
    server = start_server(mlflow_db, tmp_path, port=server.port)
    try:
        before = {r.info.run_id for r in sweeps.tracking_client(server.uri).search_runs(["1"])}
        again = sweeps.run_sweep(tmp_path, *args)
        assert again.returncode == 0, again.stderr[-3000:]
        assert_quiet(again)
        assert f"sent {waiting} finished trials' records" in again.stdout
        study, runs = assert_complete_runs(tmp_path, server.uri, 6)
        assert before <= {r.info.run_id for r in runs} | {study.user_attrs[PARENT_ATTR]}
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_dropping_the_studys_connections_mid_sweep_costs_nothing(tmp_path):
    """A PostgreSQL restart as a sweep sees it: every connection to the Optuna storage is cut.
    (The server is shared, so its connections are terminated rather than the server restarted.)
    """
    with pg.database() as storage_db:
        storage = pg.url(storage_db)
        args = [*sweeps.SMALL, *NARROW_SPACE, "train.epochs=3000", "study.report_every=500"]
        args += ["study.n_trials=10", f"study.storage={storage}", "study.name=restarted"]
        sweep = sweeps.start_sweep(tmp_path, *args)
        try:
            for done in (2, 5):

                def reached(done=done) -> bool:
                    alive(sweep)
                    try:
                        study = sweeps.load_study(storage, "restarted")
                    except KeyError:
                        return False
                    return len(study.get_trials(states=(TrialState.COMPLETE,))) >= done

                servers.wait_until(reached, 300, f"{done} trials")
                pg.execute(
                    "postgres",
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    f"WHERE datname = '{storage_db}' AND pid <> pg_backend_pid()",
                )
            result = finish(sweep)
        finally:
            if sweep.poll() is None:
                os.killpg(sweep.pid, signal.SIGKILL)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        tracking = "sqlite:///mlruns/mlflow.db"
        study, _ = sweeps.assert_books(storage, tracking, "restarted", 10, cwd=tmp_path)
        assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 10
        assert spooled(tmp_path) == 0
