"""PostgreSQL restarted while 8 local workers run one study on it: nothing lost or doubled.

The server is a private one (`pg_cluster`), really restarted (`pg_ctl restart -m fast`) while
workers are mid-trial; the sweep is a real `python -m pipeline.sweep study.n_workers=8`
subprocess. Where a worker is in its run when the server goes away depends on the machine's
speed, so the start of a run (opening the study, enqueuing the baseline, the first count) is
also tested on its own, against a storage that refuses connections as a restarting server does.
The connections-cut case on the shared server, one worker: test_outage_e2e.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from functools import partial
from pathlib import Path

import pytest
import servers
import sweeps
from optuna.exceptions import StorageInternalError
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from pg_cluster import private_cluster
from sqlalchemy.exc import OperationalError
from sweeping import BASELINE_SPACE, NARROW_SPACE, Stores, run_sweep_in

from pipeline.names import BASELINE_ATTR, TRIAL_TAG, WORKER_ATTR
from pipeline.sweeping import study as study_module
from pipeline.sweeping import worker
from pipeline.tracking import delivery

N_TRIALS, N_WORKERS, NAME = 10, 8, "restarted"
TRACKING = "sqlite:///mlruns/mlflow.db"


def alive(process: subprocess.Popen) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"the sweep ended early: {process.communicate()[1][-3000:]}")
    return True


def states(storage: str) -> dict[TrialState, int]:
    """How many trials are in each state; {} while the study or the server is not there."""
    try:
        study = sweeps.load_study(storage, NAME)
        trials = study.get_trials(deepcopy=False)
    except Exception:  # not created yet, or the server is restarting
        return {}
    counts: dict[TrialState, int] = {}
    for t in trials:
        counts[t.state] = counts.get(t.state, 0) + 1
    return counts


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_restarted_while_8_workers_run_loses_nothing(tmp_path):
    with private_cluster() as cluster:
        storage = cluster.create_database("sweeps")
        args = [*sweeps.SMALL, *NARROW_SPACE, "train.epochs=2000", "study.report_every=500"]
        args += [f"study.n_trials={N_TRIALS}", f"study.n_workers={N_WORKERS}"]
        args += [f"study.storage={storage}", f"study.name={NAME}", "study.pruner.name=none"]
        # Eight workers compiling at once on two busy cores go long between heartbeats: give
        # them the grace the README advises on crowded nodes (the scenario is the restart).
        args += ["study.grace_period=180"]
        sweep = sweeps.start_sweep(tmp_path, *args)
        try:

            def mid_sweep() -> dict[TrialState, int] | None:
                alive(sweep)
                counts = states(storage)
                started = counts.get(TrialState.COMPLETE, 0) >= 1
                return counts if started and counts.get(TrialState.RUNNING, 0) >= 3 else None

            at_restart = servers.wait_until(mid_sweep, 480, "a trial done, 3 running", 0.5)
            cluster.restart()
            out, err = sweep.communicate(timeout=600)
        finally:
            if sweep.poll() is None:
                os.killpg(sweep.pid, signal.SIGKILL)
                sweep.communicate()
        (tmp_path / "sweep.out").write_text(out), (tmp_path / "sweep.err").write_text(err)
        assert sweep.returncode == 0, f"{err[-3000:]}\n(output in {tmp_path})"
        assert "Traceback" not in out + err
        study, runs = sweeps.assert_books(storage, TRACKING, NAME, N_TRIALS, N_WORKERS, tmp_path)
        trials = study.get_trials()  # read while the server is still there
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == N_TRIALS
    assert at_restart[TrialState.RUNNING] >= 3  # workers were mid-trial when it went down
    # Who trained the finished trials (a trial given back as surplus when two workers asked the
    # last one at once, or failed before its first attribute, names no worker).
    workers = {t.user_attrs.get(WORKER_ATTR) for t in finished}
    assert None not in workers and len(workers) >= 4, workers  # shared among the workers
    by_number = {int(r.data.tags[TRIAL_TAG]): r for r in runs}
    assert set(by_number) <= {t.number for t in trials}  # no run for a trial not there
    assert not list((tmp_path / "mlruns" / "spool").glob("*.rec"))  # every record was sent


def refused() -> StorageInternalError:
    """What Optuna's RDB storage raises while PostgreSQL restarts (the connection refused)."""
    error = StorageInternalError("An exception is raised during the commit.")
    error.__cause__ = OperationalError("SELECT 1", {}, OSError("connection refused"))
    return error


class Restarting(JournalStorage):
    """A journal storage that refuses every call for `down_s` seconds once `restart()`ed."""

    def __init__(self, path: Path) -> None:
        super().__init__(JournalFileBackend(str(path)))
        self.up_at, self.refusals = 0.0, 0

    def restart(self, down_s: float = 1.5) -> None:
        self.up_at = time.monotonic() + down_s


def _refusing(name: str):
    method = getattr(JournalStorage, name)

    def call(self: Restarting, *args, **kwargs):
        if time.monotonic() < self.up_at:
            self.refusals += 1
            raise refused()
        return method(self, *args, **kwargs)

    return call


for _name, _member in vars(BaseStorage).items():
    if callable(_member) and not _name.startswith("_"):
        setattr(Restarting, _name, _refusing(_name))


@pytest.mark.parametrize("moment", ["opening", "baseline", "counting"])
def test_a_run_whose_storage_restarts_as_it_starts_waits_for_it(tmp_path, monkeypatch, moment):
    """The database goes away as the run opens its study (its first connection refused too),
    as it enqueues the baseline, or as it counts the trials before training: each waits for the
    database to be back, and the run goes on as if nothing happened."""
    journal, made = tmp_path / "mlruns" / "optuna.journal", []

    def connect(cfg):
        if not made:  # a new study: the sweep's preflight, finding no journal, connects to none
            journal.parent.mkdir(exist_ok=True)
            made.append(Restarting(journal))
            if moment == "opening":
                made[0].restart()
                raise refused()  # as RDBStorage's constructor does while the server is away
        return made[0]

    def after(call, *args, **kwargs):
        done = call(*args, **kwargs)
        made[0].restart()
        return done

    monkeypatch.setattr(study_module, "make_storage", connect)
    if moment == "baseline":  # the spool is sent just before the baseline is enqueued
        monkeypatch.setattr(delivery, "send_waiting", partial(after, delivery.send_waiting))
    if moment == "counting":
        monkeypatch.setattr(worker, "prepare_study", partial(after, worker.prepare_study))
    overrides = [*sweeps.SMALL, *BASELINE_SPACE, "train.epochs=200", "study.n_trials=2"]
    assert run_sweep_in(tmp_path, overrides, log_model=False) == 0
    assert made[0].refusals >= 1  # it was really away
    trials = Stores(tmp_path).study("log-value").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert trials[0].user_attrs.get(BASELINE_ATTR) is True  # the baseline was enqueued
