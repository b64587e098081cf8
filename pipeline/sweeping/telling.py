"""Optuna's ask and tell as a worker that trains trials in its own loop uses them.

The loop does what `Study.optimize` would: it beats for its trials (RDB heartbeats) and retries
storage calls that a dropped connection broke, so a tell may find its trial already told.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.trial import FrozenTrial


def ask(study: optuna.Study) -> optuna.Trial:
    """`study.ask` without Optuna's warning that heartbeats belong to `Study.optimize`: the
    worker beats for its trials itself, as `optimize`'s thread would (`trials._heartbeat`)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed", UserWarning)
        return study.ask()


def tell(study: optuna.Study, trial: optuna.Trial, *args: Any, **kwargs: Any) -> FrozenTrial:
    """`study.tell`; when a retry finds the trial already told (the connection dropped after
    the storage took it), the trial as told."""
    try:
        return study.tell(trial, *args, **kwargs)
    except ValueError as error:
        if "Cannot tell" not in str(error):
            raise
        return study.get_trials(deepcopy=False)[trial.number]
