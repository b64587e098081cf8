"""Divergence and failing trials: a diverging trial is pruned naming the epoch, a failing trial
is recorded with its reason (and a failed trial always has one), and too many failures in a row
stop the sweep.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sweeps
from optuna.trial import TrialState
from sweeping import NARROW_SPACE

from pipeline.names import BASELINE_ATTR, REASON

JOURNAL, TRACKING = "mlruns/optuna.journal", "sqlite:///mlruns/mlflow.db"


@pytest.mark.slow
def test_diverging_trials_are_pruned_naming_the_epoch(tmp_path):
    from optuna.trial import TrialState

    result = sweeps.run_sweep(
        tmp_path,
        *sweeps.SMALL,
        "study.n_trials=3",
        "search.learning_rate.low=50",
        "search.learning_rate.high=100",
        "search.optimizer=[sgd]",
        "search.activation=[tanh]",
    )
    assert result.returncode == 0, result.stderr
    study, runs = sweeps.assert_books(JOURNAL, TRACKING, "log-value", 3, cwd=tmp_path)
    baseline, *sampled = study.trials  # trial 0 is the post's network, outside this space
    assert baseline.user_attrs[BASELINE_ATTR] and baseline.state == TrialState.COMPLETE
    for t in sampled:
        assert t.state == TrialState.PRUNED
        assert re.search(r"diverged: non-finite loss at epoch \d+", t.user_attrs[REASON])
    diverged = [r for r in runs if "diverged" in r.data.tags.get(REASON, "")]
    assert len(diverged) == 2


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


def test_a_failed_trial_always_names_its_reason():
    import optuna

    from pipeline.sweeping.progress import failure_reason

    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
    (trial,) = study.trials
    assert failure_reason(trial, {0: RuntimeError("boom")}) == "RuntimeError: boom"
    assert "unknown" not in failure_reason(trial, {})


@pytest.mark.slow
def test_a_trial_failed_elsewhere_stops_training_and_the_worker_goes_on(tmp_path, monkeypatch):
    """Another worker that finds a live trial's heartbeat older than the grace period fails it
    (and retries it there); this worker stops training it, records its run FAILED and asks a
    new trial instead of crashing on Optuna's refusal to update a finished trial."""
    from optuna.trial import TrialState

    from pipeline.core.trainer import Population
    from pipeline.sweeping import runner

    real_step, calls = Population.step, []
    journal = str(tmp_path / JOURNAL)

    def failed_elsewhere(self):
        calls.append(1)
        if len(calls) == 2:  # between two chunks of the first trial, as a stale check would
            first = sweeps.load_study(journal, "log-value").trials[0]
            assert first.state == TrialState.RUNNING
            storage = sweeps.load_study(journal, "log-value")._storage
            storage.set_trial_state_values(first._trial_id, TrialState.FAIL)
        return real_step(self)

    monkeypatch.setattr(Population, "step", failed_elsewhere)
    settings = sweep_settings(
        tmp_path, *sweeps.SMALL, "study.n_trials=2", "study.population=1", *NARROW_SPACE
    )
    assert runner.run_sweep(settings) == 0
    study, _ = sweeps.assert_books(journal, settings.tracking.uri, "log-value", 2)
    (taken,) = study.get_trials(states=(TrialState.FAIL,))
    run = sweeps.trial_run(sweeps.tracking_client(settings.tracking.uri), study, taken.number)
    assert run.info.status == "FAILED" and "was taken" in run.data.tags[REASON]
    assert taken.number == 0 and len(study.trials) == 3
