"""Interrupts: SIGINT or SIGTERM while a trial trains fails that trial, closes its run and the
study's run as KILLED, and the same command run again resumes the study.

Sweeps run as real subprocesses (`python -m pipeline.sweep`, cwd = a temp dir) with real
signals; waits poll the Optuna storage with a deadline, never fixed sleeps.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
import servers
import sweeps

from pipeline.names import PARENT_ATTR, REASON, RUN_ATTR, STATE_TAG, WORKER_ATTR

JOURNAL, TRACKING = "mlruns/optuna.journal", "sqlite:///mlruns/mlflow.db"

# Trials long enough (the baseline trains ~1 s) that polling reliably sees one mid-training.
INTERRUPTED = [
    "objective=value",
    "study.n_trials=2",
    "train.epochs=100000",
    "study.report_every=1000",
    "study.pruner.name=none",
]


def mid_training(process: subprocess.Popen, tmp_path: Path):
    """The RUNNING trial once it reported progress (so it is inside training)."""
    if process.poll() is not None:
        raise AssertionError(f"the sweep ended early: {process.communicate()[1][-3000:]}")
    trial = sweeps.running_trial(JOURNAL, "log-value", tmp_path)
    return trial if trial is not None and trial.intermediate_values else None


def interrupt_when_running(
    tmp_path: Path, sig: int, overrides: list[str], pid_of_worker: bool = True
) -> tuple[subprocess.CompletedProcess, int]:
    """Start the sweep, wait for a trial RUNNING (polling storage), send `sig` to the sweep."""
    process = sweeps.start_sweep(tmp_path, *overrides)
    try:
        trial = servers.wait_until(
            lambda: mid_training(process, tmp_path),
            timeout=180,
            what="a RUNNING trial",
        )
        process.send_signal(sig)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err), trial.number


def assert_interrupted_then_resumes(tmp_path, result, number, code, overrides, n_workers=1):
    from optuna.trial import TrialState

    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert "rerun the same command to resume" in result.stderr
    study = sweeps.load_study(JOURNAL, "log-value", tmp_path)
    trial = study.trials[number]
    assert trial.state == TrialState.FAIL
    assert not study.get_trials(states=(TrialState.RUNNING,))
    client = sweeps.tracking_client(TRACKING, tmp_path)
    run = sweeps.trial_run(client, study, number)
    assert run.info.status == "KILLED"
    assert run.data.tags[STATE_TAG] == "FAIL"
    parent = client.get_run(study.user_attrs[PARENT_ATTR])
    assert parent.info.status == "KILLED"
    # SIGTERM is a scheduler's stop: the trial's params wait to be retried (Ctrl-C: a new trial).
    copies = [t for t in study.trials if t.system_attrs.get("failed_trial") == number]
    assert len(copies) == (code == 143), [t.system_attrs for t in study.trials]
    for copy in copies:
        assert copy.state == TrialState.WAITING and copy.params == trial.params
        assert not {REASON, RUN_ATTR, WORKER_ATTR} & copy.user_attrs.keys()
    again = sweeps.run_sweep(tmp_path, *overrides)
    assert again.returncode == 0, again.stderr
    sweeps.assert_books(JOURNAL, TRACKING, "log-value", 2, n_workers, tmp_path)
    retried = sweeps.load_study(JOURNAL, "log-value", tmp_path).trials
    assert all(retried[c.number].state in (TrialState.COMPLETE, TrialState.PRUNED) for c in copies)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_fails_trial_kills_run_and_rerun_resumes(tmp_path, sig, code):
    result, number = interrupt_when_running(tmp_path, sig, INTERRUPTED)
    assert_interrupted_then_resumes(tmp_path, result, number, code, INTERRUPTED)


@pytest.mark.slow
def test_sigterm_to_parent_of_two_workers(tmp_path):
    overrides = [*INTERRUPTED, "study.n_workers=2"]
    result, number = interrupt_when_running(tmp_path, signal.SIGTERM, overrides)
    assert_interrupted_then_resumes(tmp_path, result, number, 143, overrides, n_workers=2)


@pytest.mark.slow
def test_ctrl_c_while_two_threads_train_fails_their_trials_and_rerun_resumes(tmp_path):
    overrides = [*INTERRUPTED, "study.n_jobs=2"]  # the baseline and trial 1 on a thread each
    result, number = interrupt_when_running(tmp_path, signal.SIGINT, overrides)
    assert_interrupted_then_resumes(tmp_path, result, number, 130, overrides)
