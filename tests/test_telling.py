"""`telling.tell` as a worker uses it: a retried tell returns the trial as told, and a trial
another worker failed as stale after its last report is Taken, on the in-memory storage and on
an RDB whose cache still holds the trial as RUNNING (Optuna then raises UpdateFinishedTrialError).
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from pipeline.sweeping import telling


def two_workers(tmp_path: Path) -> tuple[optuna.Study, optuna.Study]:
    """The same study through two RDB storages, each with its own cache, as two workers."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    ours = optuna.create_study(study_name="s", storage=optuna.storages.RDBStorage(url))
    return ours, optuna.load_study(study_name="s", storage=optuna.storages.RDBStorage(url))


def test_a_trial_failed_elsewhere_after_its_last_report_is_taken_at_the_tell(tmp_path) -> None:
    ours, theirs = two_workers(tmp_path)
    trial = telling.ask(ours)
    telling.report(trial, 0.5, 1)
    ours.get_trials(deepcopy=False)  # our cache holds it RUNNING
    theirs.tell(trial.number, state=TrialState.FAIL)  # their heartbeat check found it stale
    with pytest.raises(telling.Taken, match=f"trial {trial.number} was taken"):
        telling.tell(ours, trial, 0.25)
    with pytest.raises(telling.Taken):
        telling.tell(ours, trial, state=TrialState.PRUNED)
    assert telling.tell(ours, trial, state=TrialState.FAIL).state == TrialState.FAIL


@pytest.mark.parametrize("storage", ["memory", "rdb"])
def test_a_retried_tell_returns_the_trial_as_told(tmp_path, storage: str) -> None:
    study = optuna.create_study() if storage == "memory" else two_workers(tmp_path)[0]
    trial = telling.ask(study)
    first = telling.tell(study, trial, 0.25)
    again = telling.tell(study, trial, 0.25)  # the connection dropped after the first commit
    assert (again.number, again.state, again.value) == (first.number, TrialState.COMPLETE, 0.25)


def test_a_trial_failed_elsewhere_is_taken_on_the_in_memory_storage() -> None:
    study = optuna.create_study()
    trial = telling.ask(study)
    study.tell(trial.number, state=TrialState.FAIL)
    with pytest.raises(telling.Taken):
        telling.tell(study, trial, 0.25)
