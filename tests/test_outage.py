"""Tracking-server outages: finished trials wait in a local spool and reach MLflow
when it is back; nothing is lost, nothing recorded twice, and training never waits on MLflow.

The end-to-end tests run real `mlflow server` processes over PostgreSQL, kill them (SIGKILL,
a crash) and start them again on the same port; sweeps are real `python -m pipeline.sweep`
subprocesses. Waits poll the stores with deadlines; the one timed wait is an outage's length.
"""

from __future__ import annotations

import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pg
import pytest
import servers
import sweeps
from optuna.trial import TrialState
from sweeping import NARROW_SPACE, RUN_PLOTS, artifact_paths

from pipeline.core.data import make_dataset
from pipeline.core.problems import shipped
from pipeline.core.results import Report, TrainResult
from pipeline.names import PARENT_ATTR, PARENT_TAG, STATE_TAG
from pipeline.settings import load
from pipeline.tracking.spool import Spool, TrialRecord, claimed, trial_record

DATA = load("train").data  # the shipped data settings (conf/data/default.yaml)
JOURNAL = "mlruns/optuna.journal"
SPOOL = "mlruns/spool"
KILLED = "; its run closed as KILLED"
RETRY_NOISE = re.compile(r"Retrying \(|urllib3|Max retries|connectionpool|View run", re.I)


def fake_result(epochs: int = 500) -> TrainResult:
    """A trained network's result as the trainer returns it, without training."""
    steps = np.arange(50, epochs + 1, 50)
    data = make_dataset(DATA, shipped("log"), 1.0)
    return TrainResult(
        history_epochs=steps,
        history_loss=1.0 / steps,
        reports=[Report(250, 0.01, 0.5, 0.6), Report(epochs, 0.001, 0.05, 0.06)],
        val_value_mse=0.05,
        val_deriv_mse=0.06,
        epochs_run=epochs,
        diverged_at=None,
        stopped_early=False,
        weights=[np.ones((1, 4), np.float32), np.zeros(4, np.float32)],
        val_f=np.log(data.x_val),
        val_df=1.0 / data.x_val,
        seconds=0.1,
    )


def record_for(client, number: int = 0, parent: str | None = None) -> TrialRecord:
    experiment = client.get_experiment_by_name("pipeline")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("pipeline")
    parent = parent or client.create_run(experiment_id).info.run_id
    return trial_record(
        experiment_id=experiment_id,
        parent_run_id=parent,
        study_name="log-value",
        number=number,
        objective="value",
        state="COMPLETE",
        params={"n_layers": 1, "hidden": [4]},
        result=fake_result(),
        data=make_dataset(DATA, shipped("log"), 1.0),
        start=time.time() - 3,
    )


def sqlite_client(tmp_path: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


# --- the record and its idempotent sending -------------------------------------------------


def test_a_spooled_record_loads_without_tensorflow(tmp_path):
    spool = Spool(tmp_path / "spool", "http://127.0.0.1:1")
    record = trial_record(
        experiment_id="1",
        parent_run_id="p",
        study_name="s",
        number=7,
        objective="value",
        state="PRUNED",
        reason="pruned at epoch 100 by the pruner",
        result=fake_result(),
        data=make_dataset(DATA, shipped("log"), 1.0),
    )
    path = spool.write(record)
    assert spool.waiting() == [path] and not list(spool.directory.glob(".*"))  # no temp left
    code = (
        "import pickle, sys; from pathlib import Path\n"
        "from pipeline.tracking.spool import claimed\n"
        f"with claimed(Path({str(path)!r})) as r: print(r.run_name, r.tags['optuna.state'])\n"
        "import pipeline.tracking.delivery, pipeline.tracking.recording\n"
        "print('tensorflow' in sys.modules)"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["s-0007", "PRUNED", "False"], out.stderr[-2000:]
    assert Spool(tmp_path / "spool", "http://other:5000").waiting() == []  # keyed by store


def test_records_pickle_round_trip():
    record = trial_record(
        experiment_id="1",
        parent_run_id="p",
        study_name="s",
        number=1,
        objective="value",
        state="FAIL",
        reason="interrupted",
        killed=True,
    )
    assert pickle.loads(pickle.dumps(record)) == record
    assert record.status == "KILLED" and record.result is None


def test_a_record_held_by_one_sender_is_skipped_by_another(tmp_path):
    spool = Spool(tmp_path, "sqlite:///x.db")
    path = spool.write(record_for(sqlite_client(tmp_path)))
    with claimed(path) as mine:
        assert mine is not None
        with claimed(path) as theirs:
            assert theirs is None
        path.unlink()  # sent: removed while still held
    with claimed(path) as late:
        assert late is None


def test_sending_a_record_again_completes_its_one_run(tmp_path):
    from pipeline.tracking.delivery import find_trial_run, send_record

    client = sqlite_client(tmp_path)
    record = record_for(client, number=3)
    # A first attempt that got no further than creating the run (the server died after it).
    client.create_run(
        record.experiment_id,
        start_time=record.start_ms,
        tags={**record.tags, PARENT_TAG: record.parent_run_id},
        run_name=record.run_name,
    )
    first = send_record(client, record)
    again = send_record(client, record)  # the answer was lost; the record is sent again
    assert first == again
    run = find_trial_run(client, record.experiment_id, record.parent_run_id, 3)
    assert run.info.run_id == first and run.info.status == "FINISHED"
    assert (run.info.start_time, run.info.end_time) == (record.start_ms, record.end_ms)
    assert run.info.run_name == "log-value-0003"
    assert run.data.tags[STATE_TAG] == "COMPLETE"
    history = client.get_metric_history(first, "loss")
    assert len(history) == len(record.result.history_epochs)  # not doubled
    assert artifact_paths(client, first) >= RUN_PLOTS
    children = client.search_runs(
        [record.experiment_id], f"tags.`mlflow.parentRunId` = '{record.parent_run_id}'"
    )
    assert len(children) == 1


def test_unreachable_means_no_answer_not_a_bad_request(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.outage import unreachable

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    down = MlflowClient(f"http://127.0.0.1:{servers.free_port()}")
    with pytest.raises(Exception) as away:
        down.get_experiment_by_name("pipeline")
    assert unreachable(away.value)
    with pytest.raises(Exception) as wrong:
        sqlite_client(tmp_path).get_run("no-such-run")
    assert not unreachable(wrong.value)


def test_the_recorder_keeps_records_while_mlflow_is_away(tmp_path):
    from pipeline.tracking.outage import TrackingOutage
    from pipeline.tracking.recorder import BackgroundRecorder

    uri = f"http://127.0.0.1:{servers.free_port()}"  # nothing listens there
    spool = Spool(tmp_path / "spool", uri)
    record = record_for(sqlite_client(tmp_path))
    with pytest.raises(TrackingOutage) as stopped, BackgroundRecorder(spool) as recorder:
        recorder.submit(record)
        servers.wait_until(recorder.outage, 60, "the recorder to notice MLflow is away")
        assert recorder.waiting() == 1
        recorder.drain(patience=0.5)
    assert spool.count() == 1  # abandoned, not lost
    line = stopped.value.line(spool.count())
    assert uri in line and "holds 1 record of finished trials" in line and "rerun" in line
    with claimed(spool.waiting()[0]) as kept:
        assert (kept.run_name, kept.tags, kept.end_ms) == (
            record.run_name,
            record.tags,
            record.end_ms,
        )


def test_a_failed_trial_always_names_its_reason():
    import optuna

    from pipeline.sweeping.progress import failure_reason

    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
    (trial,) = study.trials
    assert failure_reason(trial, {0: RuntimeError("boom")}) == "RuntimeError: boom"
    assert "unknown" not in failure_reason(trial, {})


def test_a_trial_no_worker_took_up_is_failed_retried_and_recorded(monkeypatch):
    """A worker that lost the storage right after asking leaves a RUNNING trial nobody runs."""
    import optuna

    from pipeline.sweeping import consistency
    from pipeline.sweeping.handle import StudyHandle
    from pipeline.sweeping.study import worker_id

    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage)
    handle = StudyHandle(study.study_name, "value", storage, study)
    orphan, mine = study.ask(), study.ask()
    mine.set_user_attr("worker", worker_id())  # this live process runs it
    monkeypatch.setattr(consistency, "UNCLAIMED_AFTER_S", 0.0)
    recorded = []
    lines = consistency.repair(handle, lambda t, reason: recorded.append((t.number, reason)))
    assert [t.state for t in study.trials[:2]] == [TrialState.FAIL, TrialState.RUNNING]
    assert study.trials[2].state == TrialState.WAITING  # the retry
    assert recorded == [(orphan.number, consistency.DIED)]
    assert lines == [f"trial {orphan.number}: no worker took it up; failed, retried" + KILLED]


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
