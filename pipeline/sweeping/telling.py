"""Optuna's ask, report and tell as a worker that trains trials in its own loop uses them.

The loop does what `Study.optimize` would: it beats for its trials (RDB heartbeats) and retries
storage calls that a dropped connection broke, so a tell may find its trial already told.
`ask_within` keeps a study's COMPLETE + PRUNED + RUNNING trials at most `n_trials` however many
workers ask at once. `PrunerView` spares the storage a full read of the study at every report.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Container
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


class PrunerView:
    """The study as the pruner reads it: its trials as of at most `max_age` seconds ago, or as
    of this worker's last tell (`refresh`), whichever is later.

    `Trial.should_prune` reads the study from its storage at every report; for an RDB that is
    every RUNNING trial of every worker with all its values (7 SQL statements and ~10 ms here,
    20 times a trial). A pruner compares a trial with the finished ones, which change only when
    a trial ends: the worker's own ends refresh the view at once, other workers' reach it
    within `max_age`. Everything but the trials is the study's own (Hyperband's brackets too).
    """

    def __init__(self, study: optuna.Study, max_age: float) -> None:
        self._study, self._max_age = study, max_age
        self._trials: list[FrozenTrial] = []
        self._read = -math.inf

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def refresh(self) -> None:
        """Read the study again at the next check (this worker told a trial)."""
        self._read = -math.inf

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        """`Study.get_trials` as of the view's last read; reads again once it is too old."""
        if time.monotonic() - self._read >= self._max_age:
            self._trials = self._study.get_trials(deepcopy=False)
            self._read = time.monotonic()
        trials = [t for t in self._trials if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def _get_trials(
        self,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[FrozenTrial]:
        return self.get_trials(deepcopy, states)


def report(trial: optuna.Trial, value: float, step: int, view: PrunerView | None = None) -> bool:
    """Report `value` at `step`; whether the pruner stops the trial, judged on `view` (or the
    study as it is now). Taken if it was failed elsewhere (Optuna then refuses any update)."""
    try:
        trial.report(value, step)
        if view is None:
            return trial.should_prune()
        # Trial.should_prune with the view in place of the study: the trial as it is now.
        return trial.study.pruner.prune(view, trial._get_latest_trial())
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
    """`study.tell`; when the trial is finished already, the trial as told if it holds the
    state told here (a retry after the connection dropped once the storage took it), else
    Taken: another worker failed it as stale between its last report and this tell."""
    try:
        return study.tell(trial, *args, **kwargs)
    except (ValueError, UpdateFinishedTrialError) as error:
        if isinstance(error, ValueError) and "Cannot tell" not in str(error):
            raise
    told = study.get_trials(deepcopy=False)[trial.number]
    if told.state != kwargs.get("state", TrialState.COMPLETE):
        raise Taken(trial.number)
    return told
