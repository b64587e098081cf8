"""Workers a scheduler starts: `python -m pipeline.sweep -m hydra/launcher=submitit_local
'worker=range(3)'` (the same path as `submitit_slurm`, on one machine) on one study, with the
journal file and with PostgreSQL behind a real `mlflow server`; a worker killed mid-trial; and
the exact trial count when workers ask the study's last trial at once.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import threading
from datetime import timedelta
from pathlib import Path

import optuna
import pg
import pytest
import servers
import sweeps
from optuna.trial import TrialState

from pipeline.names import PARENT_ATTR, REASON, WORKER_ATTR
from pipeline.sweeping import telling
from pipeline.sweeping.array import claim, closed_marker, launch_key
from pipeline.sweeping.handle import StudyHandle

JOURNAL, TRACKING = "mlruns/optuna.journal", "sqlite:///mlruns/mlflow.db"
SUMMARY = "Compare the runs:"


def run_array(cwd: Path, *overrides: str, workers: int = 3):
    """The multirun of `workers` local submitit jobs; (CompletedProcess, its sweep directory)."""
    array = ["-m", "hydra/launcher=submitit_local", f"worker=range({workers})"]
    done = sweeps.run_sweep(cwd, *array, *overrides, timeout=900)
    found = re.search(r"sweep output dir : (\S+)", done.stdout + done.stderr)
    assert found, done.stdout + done.stderr
    return done, cwd / found.group(1)


def finish(process: subprocess.Popen, timeout: float = 900) -> subprocess.CompletedProcess:
    out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def worker_logs(sweep_dir: Path) -> dict[int, str]:
    """Each job's stdout (submitit keeps one directory per job), by the index it says it had."""
    logs = {}
    for path in sorted(sweep_dir.glob(".submitit/*/*_log.out")):
        text = path.read_text()
        index = re.search(r"^worker (\d+): done$", text, re.MULTILINE)
        assert index, f"{path} does not say its worker is done:\n{text[-2000:]}"
        assert int(index.group(1)) not in logs, "two jobs say they are the same worker"
        logs[int(index.group(1))] = text
    return logs


def assert_one_summary(logs: dict[int, str], workers: int = 3) -> None:
    assert sorted(logs) == list(range(workers)), sorted(logs)
    closers = [i for i, text in logs.items() if SUMMARY in text]
    assert len(closers) == 1, f"the summary was printed by workers {closers}"


# --- n_trials exact when workers ask at once -----------------------------------------------


def test_a_trial_asked_past_n_trials_is_given_back():
    study = optuna.create_study()
    for _ in range(2):
        study.tell(study.ask(), 1.0)
    first = study.ask()  # another worker's ask of the last trial, not yet checked
    assert telling.ask_within(study, 3) is None  # the later ask sees it ahead and gives back
    surplus = study.trials[-1]
    assert surplus.state == TrialState.FAIL and surplus.user_attrs[REASON] == telling.SURPLUS
    states = [t.state for t in study.get_trials(states=telling.LIVE)]
    assert len(states) == 3 and first.number == 2


def test_an_enqueued_trial_taken_late_counts_after_the_ones_already_running():
    """A retry keeps its low number but may be taken after a later-numbered trial started:
    counting only lower numbers, both would run past n_trials."""
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage)
    study.tell(study.ask(), 1.0)
    study.enqueue_trial({})  # trial 1, WAITING (a retry)
    storage.create_new_trial(storage.get_study_id_from_name(study.study_name))  # 2, RUNNING
    assert telling.ask_within(study, 2) is None  # takes trial 1, after trial 2 started
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL,
                                               TrialState.RUNNING]  # fmt: skip


def test_the_earlier_ask_keeps_its_trial():
    study = optuna.create_study()
    study.tell(study.ask(), 1.0)
    kept = telling.ask_within(study, 2)
    assert kept is not None and kept.number == 1
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.RUNNING]


def test_threads_asking_together_finish_exactly_n_trials(tmp_path):
    """Eight workers on one journal file, each asking whenever the study looks short: without
    the rank check they overshoot (each sees n-1 live and asks)."""
    from pipeline.defaults import load
    from pipeline.sweeping.study import make_storage

    cfg = load("sweep", [f"study.storage={tmp_path / 'optuna.journal'}"]).study
    n_trials, errors = 25, []
    study = optuna.create_study(storage=make_storage(cfg), study_name="race")
    start = threading.Barrier(8)

    def worker() -> None:
        mine = optuna.load_study(study_name="race", storage=make_storage(cfg))
        start.wait()
        try:
            while len(mine.get_trials(deepcopy=False, states=telling.LIVE)) < n_trials:
                trial = telling.ask_within(mine, n_trials)
                if trial is not None:
                    mine.tell(trial, 0.5)
        except Exception as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == n_trials


# --- who closes a study ---------------------------------------------------------------------


def test_exactly_one_claim_per_launch_and_study_state(tmp_path):
    from pipeline.defaults import load
    from pipeline.sweeping.study import make_storage

    cfg = load("sweep", [f"study.storage={tmp_path / 'optuna.journal'}"]).study
    storages = [make_storage(cfg) for _ in range(3)]  # three workers' own storages
    study = optuna.create_study(storage=storages[0], study_name="s")
    handles = [
        StudyHandle("s", "value", s, optuna.load_study(study_name="s", storage=s)) for s in storages
    ]
    running = study.ask()
    study.tell(study.ask(), 1.0)
    assert not claim(handles[0], 1, "a")  # a trial still runs: its worker closes the study
    study.tell(running, 2.0)
    assert not claim(handles[0], 3, "a")  # short of n_trials: not done
    assert [claim(h, 2, "a") for h in handles] == [True, False, False]
    assert claim(handles[1], 2, "b")  # the next launch closes it again (a rerun)
    study.tell(study.ask(), 3.0)
    assert claim(handles[2], 2, "a")  # a trial more (a retry made up): closed once more
    names = {s.study_name for s in storages[0].get_all_studies()}
    assert closed_marker("s", "a", 2) in names and closed_marker("s", "a", 3) in names
    assert launch_key("multirun/x") != launch_key("multirun/y") and launch_key(None) == ""


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("worker=-1", "error: worker=-1: must be null or an integer >= 0 (this worker's index)"),
        ("worker=abc", "error: worker=abc: must be null or an integer >= 0 (this worker's index)"),
        ("study.n_workers=2", "error: study.n_workers=2: must be 1 when worker is set"),
    ],
)
def test_a_bad_worker_is_one_line_and_writes_nothing(tmp_path, override, expected):
    extra = [] if override.startswith("worker=") else ["worker=0"]
    done = sweeps.run_sweep(tmp_path, "objective=value", override, *extra, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == expected
    assert not list(tmp_path.iterdir())


# --- arrays of workers ----------------------------------------------------------------------

ARRAY = [*sweeps.SMALL, "study.n_trials=6"]


@pytest.mark.slow
def test_three_submitit_workers_share_the_journal_study(tmp_path):
    done, sweep_dir = run_array(tmp_path, *ARRAY)
    assert done.returncode == 0, done.stdout + done.stderr
    logs = worker_logs(sweep_dir)
    assert_one_summary(logs)
    study, runs = sweeps.assert_books(JOURNAL, TRACKING, "log-value", 6, 3, tmp_path)
    assert len(runs) == len(study.trials)  # a surplus trial would have no run: none was made
    workers = {t.user_attrs[WORKER_ATTR] for t in study.trials}
    assert len(workers) >= 2, workers  # the study was shared
    for text in logs.values():
        assert "Traceback" not in text


@pytest.mark.slow
@pytest.mark.postgres
def test_three_submitit_workers_share_a_postgres_study_and_mlflow_server(tmp_path):
    pg.require_postgres()
    name = f"array-{secrets.token_hex(3)}"
    (tmp_path / "server").mkdir()
    with (
        pg.database() as storage_db,
        servers.mlflow_server(tmp_path / "server") as (_, server),
    ):
        storage = pg.url(storage_db)
        args = [
            *ARRAY,
            f"study.storage={storage}",
            f"tracking.uri={server.uri}",
            f"study.name={name}",
            # A worker beats between chunks: its first chunk compiles (20 s on a busy 2-core
            # machine), so the grace period must outlast that or its trial is taken from it.
            "study.heartbeat_interval=2",
            "study.grace_period=40",
        ]
        (tmp_path / "run").mkdir()
        done, sweep_dir = run_array(tmp_path / "run", *args)
        assert done.returncode == 0, done.stdout + done.stderr
        assert_one_summary(worker_logs(sweep_dir))
        study, _ = sweeps.assert_books(storage, server.uri, name, 6, 3)
        assert study.user_attrs[PARENT_ATTR]


@pytest.mark.slow
def test_a_worker_killed_mid_trial_and_the_rerun_completes_the_study(tmp_path):
    """SIGKILL one job mid-trial (what a scheduler's preemption does): the multirun fails, its
    trial is failed and retried with the same params, and the same command run again leaves
    the study exact and closed, the summary printed once."""
    args = [*ARRAY, "train.epochs=20000", "study.pruner.name=none"]
    array = sweeps.start_sweep(
        tmp_path, "-m", "hydra/launcher=submitit_local", "worker=range(3)", *args
    )

    def mid_trial():
        if array.poll() is not None:
            raise AssertionError(f"the array ended early: {array.communicate()[1][-3000:]}")
        trial = sweeps.running_trial(JOURNAL, "log-value", tmp_path)
        return trial if trial is not None and trial.intermediate_values else None

    try:
        victim = servers.wait_until(mid_trial, 300, "a worker's trial mid-training", 0.3)
        os.kill(int(victim.user_attrs[WORKER_ATTR].rsplit(":", 1)[1]), signal.SIGKILL)
        first = finish(array)
    finally:
        if array.poll() is None:
            array.kill()
            array.communicate()
    assert first.returncode != 0  # the launcher reports the job that died
    done, sweep_dir = run_array(tmp_path, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_one_summary(worker_logs(sweep_dir))
    study, _ = sweeps.assert_books(JOURNAL, TRACKING, "log-value", 6, 3, tmp_path)
    killed = study.trials[victim.number]
    assert killed.state == TrialState.FAIL
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert retried and retried[0].params == killed.params
    assert retried[0].datetime_start - killed.datetime_start > timedelta(0)
