"""Optuna's ask, report and tell as a worker that trains trials in its own loop uses them.

The loop does what `Study.optimize` would: it beats for its trials (RDB heartbeats) and retries
storage calls that a dropped connection broke, so a tell may find its trial already told.
`ask_within` keeps a study's COMPLETE + PRUNED + RUNNING trials at most `n_trials` however many
workers ask at once.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from pipeline.core.results import TrainResult
from pipeline.names import REASON

LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
ASK_ATTEMPTS = 5  # rounds of two workers both giving back their trial, in a row
SURPLUS = "surplus: the study already had n_trials finished or running when it was asked"


class Taken(Exception):
    """Another worker failed this worker's trial as stale (its heartbeat lapsed past
    `study.grace_period`, say while a first graph compiled) and retries it: stop training it."""

    def __init__(self, number: int) -> None:
        super().__init__(
            f"trial {number} was taken: another worker found its heartbeat older than "
            "study.grace_period, failed it and retries it"
        )


def report(trial: optuna.Trial, value: float, step: int) -> bool:
    """Report `value` at `step`; whether the pruner stops the trial. Taken if it was failed
    elsewhere (Optuna then refuses any update to it)."""
    try:
        trial.report(value, step)
        return trial.should_prune()
    except UpdateFinishedTrialError:
        raise Taken(trial.number) from None


def set_attr(trial: optuna.Trial, key: str, value: object) -> None:
    """`trial.set_user_attr`; Taken if the trial was failed elsewhere."""
    try:
        trial.set_user_attr(key, value)
    except UpdateFinishedTrialError:
        raise Taken(trial.number) from None


def ask(study: optuna.Study) -> optuna.Trial:
    """`study.ask` without Optuna's warning that heartbeats belong to `Study.optimize`: the
    worker beats for its trials itself, as `optimize`'s thread would (`trials._heartbeat`)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed", UserWarning)
        return study.ask()


def ahead(mine: FrozenTrial | optuna.Trial, other: FrozenTrial) -> bool:
    """Whether `other` counts before `mine`: a lower number, or started earlier (an enqueued
    trial, a retry, keeps its low number yet may be taken after later-numbered ones)."""
    started = other.datetime_start is not None and mine.datetime_start is not None
    return other.number < mine.number or (started and other.datetime_start < mine.datetime_start)


def ask_within(study: optuna.Study, n_trials: int) -> optuna.Trial | None:
    """A new trial, or None when `n_trials` live trials (finished or running) count before it.

    Workers check the count before asking, yet two may ask the study's last trial at once. Each
    then counts the live trials ahead of its own (`ahead`): of two that see each other at most
    one keeps its trial, and one that asked later sees the earlier one. The surplus trial is
    given back at once (FAIL, which the study does not count and which no trial line reports),
    so the study never trains more than `n_trials`. If fewer than `n_trials` remain live (the
    other gave its trial back too), this asks again.
    """
    for _ in range(ASK_ATTEMPTS):
        trial = ask(study)
        live = study.get_trials(deepcopy=False, states=LIVE)
        others = [t for t in live if t.number != trial.number]
        if sum(1 for t in others if ahead(trial, t)) < n_trials:
            return trial
        trial.set_user_attr(REASON, SURPLUS)
        study.tell(trial, state=TrialState.FAIL)
        if len(others) >= n_trials:
            return None
    return None


def outcome(result: TrainResult) -> tuple[str, str | None]:
    """Optuna's state for a trained trial and why it stopped early, if it did."""
    if result.diverged_at is not None:
        return "PRUNED", f"diverged: non-finite loss at epoch {result.diverged_at}"
    if result.stopped_early:
        return "PRUNED", f"pruned at epoch {result.epochs_run} by the pruner"
    return "COMPLETE", None


def tell(study: optuna.Study, trial: optuna.Trial, *args: Any, **kwargs: Any) -> FrozenTrial:
    """`study.tell`; when a retry finds the trial already told (the connection dropped after
    the storage took it), the trial as told."""
    try:
        return study.tell(trial, *args, **kwargs)
    except ValueError as error:
        if "Cannot tell" not in str(error):
            raise
        return study.get_trials(deepcopy=False)[trial.number]
