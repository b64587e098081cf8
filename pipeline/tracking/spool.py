"""The durable local spool: one file per finished trial, written before MLflow is asked and
removed once MLflow has it, so neither a tracking-server outage nor a killed sweep costs a trial.

A `TrialRecord` is everything a finished trial's MLflow run needs (created, filled and closed
from it alone): picklable and TensorFlow-free, so any process can send it, at any later time.
Files are written atomically (temp + rename) and claimed with `flock` while being sent, so
several processes may drain one spool: each record is sent by one of them at a time.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pickle
import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.data import Dataset
from pipeline.core.results import TrainResult
from pipeline.names import OBJECTIVE_TAG, REASON, ROLE_TAG, STATE_TAG, STUDY_TAG, TRIAL_TAG

SUFFIX = ".rec"
FAILED_DIR = "failed"  # records MLflow refused (not an outage): kept for a look, never resent


class UnreadableRecord(ValueError):
    """A spool file that does not load (written by another version, or damaged)."""


@dataclass(frozen=True)
class TrialRecord:
    """A finished trial (COMPLETE, PRUNED or FAIL) as its child run of the study run will hold
    it. `result` is None when training produced none (a failure, an interrupt, a dead worker)."""

    experiment_id: str
    parent_run_id: str
    study_name: str
    trial_number: int
    state: str
    reason: str | None
    status: str  # the run's end: FINISHED, FAILED or KILLED
    start_ms: int
    end_ms: int
    objective: str
    tags: dict[str, str] = field(default_factory=dict)
    deriv_weight: float = 1.0  # the objective's, for what a Sobolev study minimises
    condition_weight: float = 0.0  # the objective's, for what a residual study minimises
    params: dict[str, Any] = field(default_factory=dict)
    result: TrainResult | None = None
    data: Dataset | None = None

    @property
    def run_name(self) -> str:
        return f"{self.study_name}-{self.trial_number:04d}"

    @property
    def label(self) -> str:
        """The plots' title: `<study> #<n>`."""
        return f"{self.study_name} #{self.trial_number}"


def trial_record(
    *,
    experiment_id: str,
    parent_run_id: str,
    study_name: str,
    number: int,
    objective: str,
    state: str,
    reason: str | None = None,
    killed: bool = False,
    params: Mapping[str, Any] | None = None,
    result: TrainResult | None = None,
    data: Dataset | None = None,
    start: float | None = None,
    end: float | None = None,
    deriv_weight: float = 1.0,
    condition_weight: float = 0.0,
) -> TrialRecord:
    """The record of one finished trial; `start`/`end` are epoch seconds (end defaults to now).

    `state` is Optuna's (COMPLETE, PRUNED, FAIL); a FAIL run ends KILLED when `killed`
    (interrupted, worker died), else FAILED. Independent of how the trial was run.
    """

    end = time.time() if end is None else end
    tags = {
        ROLE_TAG: "trial",
        OBJECTIVE_TAG: objective,
        STUDY_TAG: study_name,
        TRIAL_TAG: str(number),
        STATE_TAG: state,
    } | ({REASON: reason} if reason else {})
    status = "FINISHED" if state != "FAIL" else ("KILLED" if killed else "FAILED")
    return TrialRecord(
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        study_name=study_name,
        trial_number=number,
        state=state,
        reason=reason,
        status=status,
        start_ms=int(1000 * (end if start is None else start)),
        end_ms=int(1000 * end),
        objective=objective,
        tags=tags,
        params=dict(params or {}),
        result=result,
        data=data,
        deriv_weight=deriv_weight,
        condition_weight=condition_weight,
    )


def spool_dir(tracking_uri: str, storage: str) -> Path:
    """Where a sweep's spool lives: beside the embedded MLflow database, else beside the Optuna
    journal file, else `mlruns/spool` in the working directory (by default all three agree)."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///")).parent / "spool"
    if "://" not in storage:
        return Path(storage).parent / "spool"
    return Path("mlruns") / "spool"


@dataclass(frozen=True)
class Spool:
    """The records waiting for one tracking store (files keyed by its URI) in `directory`."""

    directory: Path
    uri: str

    @classmethod
    def of_sweep(cls, tracking_uri: str, storage: str) -> Spool:
        """The spool of a sweep tracking to `tracking_uri` with its study in `storage`."""
        return cls(spool_dir(tracking_uri, storage), tracking_uri)

    @property
    def _prefix(self) -> str:
        return hashlib.sha1(self.uri.encode()).hexdigest()[:10] + "-"

    def write(self, record: TrialRecord) -> Path:
        """Write `record` atomically; its path, ready to be sent."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{self._prefix}{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(3)}{SUFFIX}"
        path = self.directory / name
        temp = self.directory / f".{name}.tmp"
        with open(temp, "wb") as file:
            pickle.dump(record, file, protocol=pickle.HIGHEST_PROTOCOL)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
        return path

    def waiting(self) -> list[Path]:
        """The records not yet sent, oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob(f"{self._prefix}*{SUFFIX}"))

    def count(self) -> int:
        return len(self.waiting())

    def set_aside(self, path: Path) -> Path:
        """Move a record MLflow refused to `failed/`, out of the way of later sends."""
        target = self.directory / FAILED_DIR / path.name
        target.parent.mkdir(exist_ok=True)
        os.replace(path, target)
        return target


@contextmanager
def claimed(path: Path) -> Iterator[TrialRecord | None]:
    """The record at `path`, held exclusively while the block runs; None when another process
    holds it or it was sent meanwhile. Remove the file inside the block once MLflow has it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        if os.fstat(fd).st_nlink == 0:  # sent and removed by the holder before us
            yield None
            return
        try:
            with os.fdopen(os.dup(fd), "rb") as file:
                record = pickle.load(file)
        except Exception as error:
            raise UnreadableRecord(f"{path.name} does not load: {error!r}") from None
        yield record
    finally:
        os.close(fd)  # releases the lock
