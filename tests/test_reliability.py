"""Reliability: bad input, interrupts, divergence, failing trials, consistency check.

Sweeps run as real subprocesses (`python -m pipeline.sweep`, cwd = a temp dir) with real
signals; waits poll the Optuna storage with a deadline, never fixed sleeps.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import servers
import sweeps

from pipeline.names import PARENT_ATTR, PARENT_TAG, REASON, ROLE_TAG, STATE_TAG, TRIAL_TAG

JOURNAL, TRACKING = "mlruns/optuna.journal", "sqlite:///mlruns/mlflow.db"


def snapshot(directory: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under `directory`: (mtime_ns, bytes)."""
    return {
        str(p.relative_to(directory)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def closed_port() -> int:
    port = servers.free_port()
    with socket.socket() as s:  # nothing listens there once the probe socket is closed
        assert s.connect_ex(("127.0.0.1", port)) != 0
    return port


# --- 8: bad input -----------------------------------------------------------------------------

BAD_INPUT = [
    (["study.sampler.name=foo"], "study.sampler.name"),
    (["study.pruner.name=foo"], "study.pruner.name"),
    (["search.learning_rate.low=2", "search.learning_rate.high=1"], "search.learning_rate.low"),
    (["search.learning_rate.low=0"], "search.learning_rate.low"),
    (["search.units.low=0"], "search.units"),
    (["search.n_layers.low=0"], "search.n_layers"),
    (["train.epochs=0"], "train.epochs"),
    (["study.n_trials=0"], "study.n_trials"),
    (["study.n_workers=0"], "study.n_workers"),
    (["data.x_min=0"], "data.x_min"),
    (["data.x_min=2.0"], "data.x_max"),
    (["data.n_train=1"], "data.n_train"),
    (["study.storage=postgresql://"], "study.storage"),
    (["tracking.outage_timeout=0"], "tracking.outage_timeout"),
]


def assert_one_error_line(result: subprocess.CompletedProcess, key: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(lines) == 1, result.stderr
    assert re.match(rf"error: {re.escape(key)}[\w.]*=.*: .+", lines[0]), lines[0]


@pytest.mark.parametrize(("overrides", "key"), BAD_INPUT, ids=[" ".join(o) for o, _ in BAD_INPUT])
def test_bad_input_exits_2_with_one_line_and_creates_nothing(tmp_path, overrides, key):
    result = sweeps.run_sweep(tmp_path, "objective=value", *overrides, timeout=60)
    assert_one_error_line(result, key)
    assert not list(tmp_path.iterdir()), "nothing may be created"


def test_unknown_objective_is_hydras_error_without_traceback(tmp_path):
    result = sweeps.run_sweep(tmp_path, "objective=unknown", timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "objective" in result.stderr and "unknown" in result.stderr
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize(
    "override",
    [
        f"study.storage=postgresql://postgres@127.0.0.1:{closed_port()}/test",
        f"tracking.uri=http://127.0.0.1:{closed_port()}",
    ],
    ids=["postgres", "mlflow"],
)
def test_unreachable_server_fails_fast(tmp_path, override):
    start = time.monotonic()
    result = sweeps.run_sweep(tmp_path, "objective=value", override, timeout=60)
    assert time.monotonic() - start < 15
    assert_one_error_line(result, override.partition("=")[0])
    assert not (tmp_path / "mlruns").exists()


def test_existing_study_of_other_objective_is_refused_untouched(tmp_path):
    from dataclasses import replace

    import optuna

    from pipeline.settings import load
    from pipeline.sweeping.study import (
        make_pruner,
        make_sampler,
        make_storage,
        open_study,
    )

    cfg = replace(load("sweep").study, storage=str(tmp_path / JOURNAL))
    study, _ = open_study(make_storage(cfg), "same", "value", make_sampler(cfg), make_pruner(cfg))
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0))
    before = snapshot(tmp_path)
    result = sweeps.run_sweep(tmp_path, "objective=derivative", "study.name=same", timeout=60)
    assert_one_error_line(result, "study.name")
    assert "objective=value" in result.stderr
    assert snapshot(tmp_path) == before
    assert len(sweeps.load_study(JOURNAL, "same", tmp_path).trials) == 1


# --- 5: interrupts ------------------------------------------------------------------------------

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
    again = sweeps.run_sweep(tmp_path, *overrides)
    assert again.returncode == 0, again.stderr
    sweeps.assert_books(JOURNAL, TRACKING, "log-value", 2, n_workers, tmp_path)


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


# --- 6, 7: divergence and failing trials -----------------------------------------------------


@pytest.mark.slow
def test_diverging_trials_are_pruned_naming_the_epoch(tmp_path):
    from optuna.trial import TrialState

    result = sweeps.run_sweep(
        tmp_path,
        *sweeps.SMALL,
        "study.n_trials=2",
        "search.learning_rate.low=50",
        "search.learning_rate.high=100",
        "search.optimizer=[sgd]",
        "search.activation=[tanh]",
    )
    assert result.returncode == 0, result.stderr
    study, runs = sweeps.assert_books(JOURNAL, TRACKING, "log-value", 2, cwd=tmp_path)
    for t in study.trials:
        assert t.state == TrialState.PRUNED
        assert re.search(r"diverged: non-finite loss at epoch \d+", t.user_attrs[REASON])
    assert all("diverged" in r.data.tags[REASON] for r in runs)


def sweep_settings(tmp_path: Path, *overrides: str):
    from conftest import compose_config

    from pipeline.sweep import read_settings

    cfg = compose_config("sweep", list(overrides))
    cfg.study.storage = str(tmp_path / JOURNAL)
    cfg.tracking.uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    return read_settings(cfg)


@pytest.mark.slow
def test_failing_trials_are_recorded_and_too_many_stop_the_sweep(tmp_path, monkeypatch, capsys):
    from optuna.trial import TrialState

    from pipeline.core.trainer import Population
    from pipeline.sweeping import runner

    real_step, calls = Population.step, []

    def flaky(self):
        calls.append(1)
        if len(calls) == 2:  # one failure: recorded, the sweep goes on
            raise RuntimeError("boom in trial")
        return real_step(self)

    monkeypatch.setattr(Population, "step", flaky)
    one_at_a_time = "study.population=1"  # a failing graph call fails each trial it trains
    settings = sweep_settings(
        tmp_path, *sweeps.SMALL, "study.n_trials=2", "study.max_failures=2", one_at_a_time
    )
    assert runner.run_sweep(settings) == 0
    study = sweeps.load_study(str(tmp_path / JOURNAL), "log-value")
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 1 and "boom in trial" in failed[0].user_attrs[REASON]
    client = sweeps.tracking_client(settings.tracking.uri)
    run = sweeps.trial_run(client, study, failed[0].number)
    assert run.info.status == "FAILED"
    assert "RuntimeError: boom in trial" in run.data.tags[REASON]
    sweeps.assert_books(str(tmp_path / JOURNAL), settings.tracking.uri, "log-value", 2)

    def broken(self):
        raise RuntimeError("always broken")

    monkeypatch.setattr(Population, "step", broken)
    settings = sweep_settings(
        tmp_path, *sweeps.SMALL, "study.n_trials=4", "study.max_failures=2", one_at_a_time
    )
    capsys.readouterr()
    assert runner.run_sweep(settings) == 1
    err = capsys.readouterr().err
    assert "2 trials failed in a row" in err and "always broken" in err
    study = sweeps.load_study(str(tmp_path / JOURNAL), "log-value")
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert len(study.get_trials(states=(TrialState.FAIL,))) == 3


# --- 9: consistency check and repair -------------------------------------------------------------


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
