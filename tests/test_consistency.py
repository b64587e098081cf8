"""The consistency check (`check=true`) and the repair at a sweep's start: trials without runs,
stale running runs, a trial left RUNNING by a worker that is gone, and a trial no worker took up.
"""

from __future__ import annotations

import os
import socket
import subprocess

import pytest
import sweeps
from optuna.trial import TrialState

from pipeline.names import PARENT_ATTR, PARENT_TAG, ROLE_TAG, STATE_TAG, TRIAL_TAG

JOURNAL, TRACKING = "mlruns/optuna.journal", "sqlite:///mlruns/mlflow.db"
KILLED = "; its run closed as KILLED"


@pytest.mark.slow
def test_check_reports_consistent_then_orphans_and_sweep_start_repairs(tmp_path):
    overrides = [*sweeps.SMALL, "study.n_trials=2"]
    assert sweeps.run_sweep(tmp_path, *overrides).returncode == 0
    check = sweeps.run_sweep(tmp_path, *overrides, "check=true")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "log-value: consistent" in check.stdout

    study = sweeps.load_study(JOURNAL, "log-value", tmp_path)
    client = sweeps.tracking_client(TRACKING, tmp_path)
    first, second = (sweeps.trial_run(client, study, n).info.run_id for n in (0, 1))
    client.delete_run(first)
    client.update_run(second, status="RUNNING")
    check = sweeps.run_sweep(tmp_path, *overrides, "check=true")
    assert check.returncode == 1
    assert "INCONSISTENT" in check.stdout
    assert "trials without run: [0]" in check.stdout
    assert f"stale running runs: ['{second}']" in check.stdout
    client.restore_run(first)
    client.update_run(second, status="FINISHED")

    # A trial left RUNNING by a worker on this host that is gone (a real, finished process).
    gone = subprocess.Popen(["true"])
    gone.wait()
    trial = study.ask()
    run_id = client.create_run(
        client.get_experiment_by_name("pipeline").experiment_id,
        tags={
            PARENT_TAG: study.user_attrs[PARENT_ATTR],
            TRIAL_TAG: str(trial.number),
            STATE_TAG: "RUNNING",
            ROLE_TAG: "trial",
        },
    ).info.run_id
    trial.set_user_attr("worker", f"{socket.gethostname()}:{gone.pid}")
    assert not _alive(gone.pid)
    check = sweeps.run_sweep(tmp_path, *overrides, "check=true")
    assert check.returncode == 1 and "stale running trials" in check.stdout

    again = sweeps.run_sweep(tmp_path, *overrides)
    assert again.returncode == 0, again.stderr
    assert f"trial {trial.number}: worker" in again.stdout + again.stderr
    assert "closed as KILLED" in again.stdout + again.stderr
    assert client.get_run(run_id).info.status == "KILLED"
    from optuna.trial import TrialState

    study = sweeps.load_study(JOURNAL, "log-value", tmp_path)
    assert study.trials[trial.number].state == TrialState.FAIL
    assert not study.get_trials(states=(TrialState.RUNNING,))
    check = sweeps.run_sweep(tmp_path, *overrides, "check=true")
    assert check.returncode == 0, check.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


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


def test_a_trial_orphaned_at_the_end_is_retried_and_trained(tmp_path, monkeypatch):
    """A worker whose `ask` was retried through a dropped connection leaves a second, RUNNING
    trial nobody runs. Counted as running, it stops the worker one trial short; settling fails
    it and enqueues its retry, which the worker then trains instead of leaving it WAITING."""
    from sweeping import Stores, run_sweep_in

    from pipeline.sweeping import consistency, worker

    monkeypatch.setattr(consistency, "UNCLAIMED_AFTER_S", 0.0)
    repair, orphaned = worker._repair, []

    def repair_then_orphan(handle, record_failed, close_runs=False):
        repair(handle, record_failed, close_runs)
        finished = handle.study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
        if len(finished) == 2 and not orphaned:
            orphaned.append(handle.study.ask().number)  # asked, never claimed

    monkeypatch.setattr(worker, "_repair", repair_then_orphan)
    assert run_sweep_in(tmp_path, [*sweeps.SMALL, "study.n_trials=3"], log_model=False) == 0
    states = [t.state for t in Stores(tmp_path).study("log-value").trials]
    assert states[orphaned[0]] == TrialState.FAIL
    assert states.count(TrialState.WAITING) == 0
    assert sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states) == 3
