"""Optuna's ExperimentalWarning kept quiet where the sweep relies on such features by design.

Heartbeats, their retry, the gRPC storage proxy and metric names are "experimental" in Optuna 5.0;
the storage (`sweeping.storage`), the study (`sweeping.study`) and the repair of a study's books
(`sweeping.consistency`) all use them.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import optuna


@contextlib.contextmanager
def experimental_quietly() -> Iterator[None]:
    """Optuna's ExperimentalWarning silenced inside the block."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield
