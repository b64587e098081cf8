"""What a worker asks of the study's storage per trial: the pruner judges on a `PrunerView` (one
read of the study between this worker's tells, not one per report), and the tally after a trial
reads the study once."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from pipeline.sweeping import telling
from pipeline.sweeping.worker import tally

STEPS = range(1, 21)  # 20 reports, as a trial of 10,000 epochs reporting every 500


def counted_study(pruner: optuna.pruners.BasePruner) -> tuple[optuna.Study, list[int]]:
    """An in-memory study whose reads of all trials (what a prune check costs) are counted."""
    study = optuna.create_study(pruner=pruner)
    reads, read = [0], study._storage.get_all_trials

    def counting(*args, **kwargs):
        reads[0] += 1
        return read(*args, **kwargs)

    study._storage.get_all_trials = counting
    return study, reads


def finished(value: float, state: TrialState = TrialState.COMPLETE) -> optuna.trial.FrozenTrial:
    """A finished trial of another worker, reporting `value` at every step."""
    values = {step: value for step in STEPS}
    return create_trial(state=state, value=value, intermediate_values=values)


def test_the_view_reads_the_study_once_between_this_workers_tells() -> None:
    study, reads = counted_study(optuna.pruners.MedianPruner(n_startup_trials=1))
    study.add_trial(finished(1.0))
    view = telling.PrunerView(study, max_age=math.inf)
    trial = study.ask()
    reads[0] = 0
    assert not any(telling.report(trial, 0.5, step, view) for step in STEPS)
    assert reads[0] == 1
    next_trial = study.ask()
    reads[0] = 0
    view.refresh()  # this worker told a trial
    telling.report(next_trial, 0.5, 1, view)
    telling.report(next_trial, 0.5, 2, view)
    assert reads[0] == 1


def test_without_a_view_every_prune_check_reads_the_study() -> None:
    study, reads = counted_study(optuna.pruners.MedianPruner(n_startup_trials=1))
    study.add_trial(finished(1.0))
    trial = study.ask()
    reads[0] = 0
    for step in STEPS:
        telling.report(trial, 0.5, step)
    assert reads[0] == len(STEPS)


def test_another_workers_trial_reaches_the_pruner_at_a_refresh_or_when_the_view_is_old() -> None:
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    trial = study.ask()
    stale, fresh = telling.PrunerView(study, math.inf), telling.PrunerView(study, 0.0)
    assert not telling.report(trial, 1.0, 1, stale)  # read now: nothing finished, no pruning
    study.add_trial(finished(0.1))  # another worker finishes a far better trial
    assert not telling.report(trial, 1.0, 2, stale)
    assert telling.report(trial, 1.0, 3, fresh)  # a view past its age reads the study again
    stale.refresh()
    assert telling.report(trial, 1.0, 4, stale)
    assert trial.should_prune()  # what Optuna itself decides on the study as it is


@pytest.mark.parametrize(
    "pruner",
    [
        optuna.pruners.HyperbandPruner(min_resource=1, max_resource=20),
        optuna.pruners.SuccessiveHalvingPruner(min_resource=1),
        optuna.pruners.NopPruner(),
    ],
    ids=["hyperband", "successive_halving", "none"],
)
def test_every_pruner_judges_on_the_view_as_on_the_study(pruner) -> None:
    study = optuna.create_study(pruner=pruner)
    for value in (0.1, 0.2, 0.3):
        study.add_trial(finished(value))
    view = telling.PrunerView(study, math.inf)
    ours, theirs = study.ask(), study.ask()
    for step in STEPS:
        mine = telling.report(ours, 5.0, step, view)
        assert mine == telling.report(theirs, 5.0, step)
        if mine:
            break


def test_a_trial_failed_elsewhere_is_taken_through_the_view() -> None:
    study = optuna.create_study()
    trial, view = study.ask(), telling.PrunerView(study, math.inf)
    telling.report(trial, 1.0, 1, view)
    study.tell(trial.number, state=TrialState.FAIL)  # another worker found it stale
    with pytest.raises(telling.Taken, match=f"trial {trial.number} was taken"):
        telling.report(trial, 1.0, 2, view)


def test_the_tally_counts_finished_trials_and_finds_the_best_value() -> None:
    study, reads = counted_study(optuna.pruners.NopPruner())
    assert tally(study) == (0, None)
    study.add_trial(finished(0.5, TrialState.PRUNED))
    assert tally(study) == (1, None)  # a pruned trial counts, yet has no best value
    for value in (0.3, 0.2, 0.4):
        study.add_trial(finished(value))
    study.add_trial(create_trial(state=TrialState.FAIL))
    study.ask()  # running
    best, reads[0] = study.best_value, 0
    assert tally(study) == (4, best) == (4, 0.2)
    assert reads[0] == 1
