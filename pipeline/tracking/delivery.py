"""Sending spooled trial records to MLflow: idempotent per trial, retried while the store is away.

A trial's run is found by its tags (`mlflow.parentRunId`, `optuna.trial_number`) before one is
created, and everything written carries the record's own timestamps, so sending a record again
(after a crash, an outage, a lost answer) completes its run and never makes a second one.
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import time
from collections.abc import Callable
from pathlib import Path

from mlflow.entities import Param, Run, RunTag
from mlflow.tracking import MlflowClient

from pipeline.names import PARENT_TAG, TRIAL_TAG
from pipeline.settings import ObjectiveConfig
from pipeline.tracking import store
from pipeline.tracking.outage import TrackingOutage, backoff, first_line, unreachable
from pipeline.tracking.recording import record_training
from pipeline.tracking.spool import Spool, TrialRecord, UnreadableRecord, claimed


class Link:
    """How the tracking store answered lately, shared by a sweep and its recording process:
    since when it has not answered (0: it answers), and `stop`, which ends any retrying."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._down = context.Value("d", 0.0, lock=False)
        self.stop = context.Event()

    def failing(self) -> None:
        if not self._down.value:
            self._down.value = time.time()

    def answered(self) -> None:
        self._down.value = 0.0

    def outage(self) -> float:
        """Seconds since the store stopped answering; 0 while it answers."""
        down = self._down.value
        return time.time() - down if down else 0.0


@functools.cache
def client_for(tracking_uri: str) -> MlflowClient:
    """One client per store and process."""
    return MlflowClient(tracking_uri=tracking_uri)


def find_trial_run(
    client: MlflowClient, experiment_id: str, parent_run_id: str, number: int
) -> Run | None:
    """The run of trial `number` under the study run `parent_run_id`, if MLflow has one."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{PARENT_TAG}` = '{parent_run_id}' and tags.`{TRIAL_TAG}` = '{number}'"
        ),
        max_results=5,
        order_by=["attributes.start_time ASC"],
    )
    return runs[0] if runs else None


def open_run(client: MlflowClient, record: TrialRecord) -> str:
    """The run of a trial that starts training (found by its tags, or created RUNNING): its id,
    which the trial carries in Optuna before it is told. Its record fills and closes it."""
    run = find_trial_run(client, record.experiment_id, record.parent_run_id, record.trial_number)
    if run is not None:
        return run.info.run_id
    return client.create_run(
        record.experiment_id,
        start_time=record.start_ms,
        tags={**record.tags, PARENT_TAG: record.parent_run_id},
        run_name=record.run_name,
    ).info.run_id


def _recorded(run: Run, record: TrialRecord) -> bool:
    tags = run.data.tags
    return run.info.status == record.status and all(
        tags.get(k) == v for k, v in record.tags.items()
    )


def send_record(client: MlflowClient, record: TrialRecord) -> str:
    """Create (or find), fill and close the trial's run; its id. Safe to call again."""
    run = find_trial_run(client, record.experiment_id, record.parent_run_id, record.trial_number)
    if run is not None and _recorded(run, record):
        return run.info.run_id
    run_id = open_run(client, record) if run is None else run.info.run_id
    try:
        if record.result is not None and record.data is not None:
            record_training(
                client,
                run_id,
                record.result,
                record.data,
                record.params,
                ObjectiveConfig(
                    record.objective,
                    deriv_weight=record.deriv_weight,
                    condition_weight=record.condition_weight,
                ),
                record.label,
                record.tags,
                timestamp=record.end_ms,
            )
        else:
            client.log_batch(
                run_id,
                params=[Param(k, str(v)) for k, v in record.params.items()],
                tags=[RunTag(k, v) for k, v in record.tags.items()],
                synchronous=True,
            )
    except Exception as error:
        if not unreachable(error):  # refused for good: the run must not stay RUNNING
            store.end_run(client, run_id, "FAILED", end_time=record.end_ms)
        raise
    store.end_run(client, run_id, record.status, end_time=record.end_ms)
    return run_id


class Refused(RuntimeError):
    """MLflow refused a record (not an outage): no retry mends it."""


def deliver(spool: Spool, path: Path, link: Link, patience: float = math.inf) -> bool:
    """Send the record at `path` and remove it: True once MLflow has it (or another process
    took it), False when `link.stop` came first. While the store does not answer, retry with
    backoff; after `patience` seconds of that, TrackingOutage. A refused record is set aside."""
    try:
        with claimed(path) as record:
            if record is None:
                return True
            for delay in backoff():
                try:
                    send_record(client_for(spool.uri), record)
                    break
                except Exception as error:
                    if not unreachable(error):
                        raise Refused(first_line(error)) from None
                    link.failing()
                    if link.outage() >= patience:
                        raise TrackingOutage(spool.uri, link.outage(), spool.directory) from None
                    if link.stop.wait(delay):
                        return False
            path.unlink()
            link.answered()
            return True
    except (Refused, UnreadableRecord) as error:
        kept = spool.set_aside(path)
        raise Refused(f"{error} (record kept in {kept})") from None


def send_waiting(spool: Spool, patience: float, say: Callable[[str], None]) -> int:
    """Send, from this process, every record waiting in `spool` (what a rerun does first);
    how many were sent. TrackingOutage once the store has not answered for `patience` s."""
    waiting = spool.waiting()
    if not waiting:
        return 0
    link, sent = Link(), 0
    for path in waiting:
        try:
            sent += deliver(spool, path, link, patience)
        except TrackingOutage:
            raise
        except Exception as error:  # one refused record does not hold back the others
            say(f"warning: record {path.name} not sent: {first_line(error)}")
    say(f"sent {sent} finished trials' records that were waiting in {spool.directory}")
    return sent


def send_now(spool: Spool, record: TrialRecord, patience: float) -> None:
    """Spool `record` and send it from this process (where no recorder runs)."""
    deliver(spool, spool.write(record), Link(), patience)
