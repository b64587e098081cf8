"""Parallel and multi-machine sweeps, and a worker killed mid-trial.

Local workers share the default journal file; "machines" are separate `python -m pipeline.sweep`
processes sharing a PostgreSQL study and a real `mlflow server` backed by PostgreSQL.
"""

from __future__ import annotations

import secrets
import signal
import socket
import subprocess

import pg
import pytest
import servers
import sweeps

from pipeline.names import (
    BEST_TRIAL_TAG,
    PARENT_ATTR,
    PARENT_TAG,
    STATE_TAG,
    TRIAL_TAG,
    WORKER_ATTR,
)

JOURNAL, TRACKING = "mlruns/optuna.journal", "sqlite:///mlruns/mlflow.db"


@pytest.mark.slow
def test_two_local_workers_share_the_journal_study(tmp_path):
    result = sweeps.run_sweep(tmp_path, *sweeps.SMALL, "study.n_trials=4", "study.n_workers=2")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    study, _ = sweeps.assert_books(JOURNAL, TRACKING, "log-value", 4, 2, tmp_path)
    workers = {t.user_attrs[WORKER_ATTR] for t in study.trials}
    assert len(workers) == 2, workers  # both processes ran trials


@pytest.mark.slow
def test_a_local_worker_killed_mid_trial_leaves_the_study_closed(tmp_path):
    """The worker that leaves a study last closes it; a SIGKILLed worker never leaves, so the
    survivor finishes the trials and the sweep process closes the books itself."""
    import os

    overrides = ["study.n_trials=6", "study.n_workers=2", "train.epochs=20000"]
    sweep = sweeps.start_sweep(tmp_path, *sweeps.SMALL, *overrides, "study.pruner.name=none")

    def worker_mid_trial():
        if sweep.poll() is not None:
            raise AssertionError(f"the sweep ended early: {sweep.communicate()[1][-3000:]}")
        trial = sweeps.running_trial(JOURNAL, "log-value", cwd=tmp_path)
        if trial is None or not trial.intermediate_values:
            return None
        worker = trial.user_attrs[WORKER_ATTR]
        study = sweeps.load_study(JOURNAL, "log-value", tmp_path)
        client = sweeps.tracking_client(TRACKING, tmp_path)  # opened only once the store exists
        recorded = all(  # its earlier trials' runs are closed (see the repair test below)
            (run := sweeps.trial_run(client, study, t.number)) and run.info.status != "RUNNING"
            for t in study.trials
            if t.state.is_finished() and t.user_attrs.get(WORKER_ATTR) == worker
        )
        return trial if recorded else None

    try:
        trial = servers.wait_until(worker_mid_trial, 300, "a worker's trial mid-training", 0.3)
        os.kill(int(trial.user_attrs[WORKER_ATTR].rsplit(":", 1)[1]), signal.SIGKILL)
        result = finish(sweep)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.communicate()
    assert result.returncode == 0, result.stderr
    study, _ = sweeps.assert_books(JOURNAL, TRACKING, "log-value", 6, 2, tmp_path)
    parent = sweeps.tracking_client(TRACKING, tmp_path).get_run(study.user_attrs[PARENT_ATTR])
    assert parent.data.metrics["best_value"] == pytest.approx(study.best_value)
    assert BEST_TRIAL_TAG in parent.data.tags


def test_repair_closes_the_run_a_dead_worker_never_finished_recording(tmp_path):
    import sys

    import optuna
    from mlflow.tracking import MlflowClient

    from pipeline.sweeping import consistency
    from pipeline.sweeping.handle import StudyHandle

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a local worker that no longer exists
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("pipeline", (tmp_path / "artifacts").as_uri())
    parent = client.create_run(experiment).info.run_id
    tags = {PARENT_TAG: parent, TRIAL_TAG: "0"}
    run_id = client.create_run(experiment, tags=tags).info.run_id  # RUNNING, as it was left
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage)
    study.set_user_attr(PARENT_ATTR, parent)
    handle = StudyHandle(study.study_name, "value", storage, study, client, experiment, parent)
    worker = f"{socket.gethostname()}:{gone.pid}"
    study.add_trial(optuna.trial.create_trial(value=0.25, user_attrs={"worker": worker}))
    lines = consistency.repair(handle, close_runs=True)
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags[STATE_TAG] == "COMPLETE"  # the trial stands in Optuna
    assert run.data.metrics["objective_value"] == 0.25
    assert any(run_id in line for line in lines)
    assert consistency.repair(handle, close_runs=True) == []  # once closed, nothing more to do


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """One real `mlflow server` over PostgreSQL for the module (it takes ~25 s to start)."""
    pg.require_postgres()
    with servers.mlflow_server(tmp_path_factory.mktemp("mlflow")) as (_, server):
        yield server


@pytest.fixture
def storage_db():
    with pg.database() as name:
        yield name


def machine_args(storage: str, server: servers.MlflowServer, name: str, *extra: str) -> list[str]:
    return [
        *sweeps.SMALL,
        f"study.storage={storage}",
        f"tracking.uri={server.uri}",
        f"study.name={name}",
        *extra,
    ]


def finish(process: subprocess.Popen, timeout: float = 600) -> subprocess.CompletedProcess:
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.mark.slow
@pytest.mark.postgres
def test_two_machines_share_a_postgres_study_and_mlflow_server(tmp_path, mlflow_server, storage_db):
    storage, name = pg.url(storage_db), f"machines-{secrets.token_hex(3)}"
    # One trial at a time per machine: with populations the first machine up could take all 4.
    args = machine_args(storage, mlflow_server, name, "study.n_trials=4", "study.population=1")
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    machines = [sweeps.start_sweep(tmp_path / m, *args) for m in ("a", "b")]
    results = [finish(p) for p in machines]
    for r in results:
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr
    study, _ = sweeps.assert_books(storage, mlflow_server.uri, name, 4, 2)
    pids = {int(str(t.user_attrs[WORKER_ATTR]).rpartition(":")[2]) for t in study.trials}
    assert pids == {p.pid for p in machines}


@pytest.mark.slow
@pytest.mark.postgres
def test_sigkill_mid_trial_is_retried_and_closed(tmp_path, mlflow_server, storage_db):
    from optuna.trial import TrialState

    storage, name = pg.url(storage_db), f"killed-{secrets.token_hex(3)}"
    args = machine_args(
        storage,
        mlflow_server,
        name,
        "study.n_trials=4",
        "study.population=1",  # with populations the first machine up could take all 4 trials
        "train.epochs=20000",  # a trial lasts long enough for polling to catch it mid-training
        "study.pruner.name=none",
        "study.heartbeat_interval=1",
        "study.grace_period=3",
    )
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    victim = sweeps.start_sweep(tmp_path / "a", *args)
    survivor = sweeps.start_sweep(tmp_path / "b", *args)
    client = sweeps.tracking_client(mlflow_server.uri)

    def victim_mid_trial():
        for p in (victim, survivor):
            if p.poll() is not None:
                raise AssertionError(f"a sweep ended early: {p.communicate()[1][-3000:]}")
        trial = sweeps.running_trial(storage, name, pid=victim.pid)
        if trial is None or not trial.intermediate_values:
            return None
        study = sweeps.load_study(storage, name)
        mine = [
            t for t in study.trials if t.user_attrs.get(WORKER_ATTR, "").endswith(f":{victim.pid}")
        ]
        recorded = all(
            (run := sweeps.trial_run(client, study, t.number)) and run.info.status != "RUNNING"
            for t in mine
            if t.state.is_finished()
        )
        return trial if recorded else None

    try:
        trial = servers.wait_until(victim_mid_trial, 300, "the victim's trial mid-training", 0.3)
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=30)
        assert victim.returncode == -signal.SIGKILL
        result = finish(survivor)
    finally:
        for p in (victim, survivor):
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert result.returncode == 0, result.stderr
    assert f"trial {trial.number}" in result.stdout + result.stderr  # the repair said so
    study, _ = sweeps.assert_books(storage, mlflow_server.uri, name, 4, 2)
    dead = study.trials[trial.number]
    assert dead.state == TrialState.FAIL
    run = sweeps.trial_run(client, study, dead.number)
    assert run.info.status == "KILLED"
    assert run.data.tags[STATE_TAG] == "FAIL"
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == trial.number]
    assert retried, "the killed trial was not retried"
    assert retried[0].params == dead.params
