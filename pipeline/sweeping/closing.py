"""After a sweep's local worker processes stop: the books of each study, closed from here.

Interrupted: what the spool holds is sent, leftovers are repaired and each study run ends
KILLED, all quickly and not at all while MLflow does not answer (the rerun does it then).
Done: each study's summary; a study whose books no worker closed (one died) is finalised here.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from optuna.trial import FrozenTrial

from pipeline import entry
from pipeline.sweeping import consistency
from pipeline.sweeping.handle import StudyHandle, SweepSettings
from pipeline.sweeping.study_run import summarize
from pipeline.tracking import delivery, store
from pipeline.tracking.outage import QUICK_S, TrackingOutage, patiently
from pipeline.tracking.spool import Spool

if TYPE_CHECKING:
    from pipeline.sweeping.worker import StudyOutcome
    from pipeline.tracking.recorder import BackgroundRecorder


def close_parents(handles: list[StudyHandle], settings: SweepSettings, status: str) -> None:
    """Send what waits, repair leftovers and end each study's parent run as `status`."""
    spool = Spool.of_sweep(settings.tracking.uri, settings.study.storage)
    quickly = partial(patiently, uri=settings.tracking.uri, patience=QUICK_S, spool=spool.directory)
    try:
        delivery.send_waiting(spool, QUICK_S, lambda line: None)
        for handle in handles:

            def record_failed(t: FrozenTrial, reason: str, handle: StudyHandle = handle) -> None:
                delivery.send_now(spool, consistency.failed_record(handle, t, reason), QUICK_S)

            quickly(partial(consistency.repair, handle, record_failed, close_runs=True))
            if handle.parent_run_id and not handle.running():
                quickly(partial(store.end_run, handle.client, handle.parent_run_id, status))
    except TrackingOutage:
        pass  # the spool keeps the records; the rerun sends them and reopens the study runs


def outcomes(
    handles: list[StudyHandle],
    settings: SweepSettings,
    recorder: Callable[[SweepSettings], BackgroundRecorder],
) -> list[StudyOutcome]:
    """Each study's summary; a study whose books a worker could not close (it died) is
    finalised here, the one case where this process needs TensorFlow."""
    from pipeline.sweeping.worker import StudyOutcome, run_study

    spool = Spool.of_sweep(settings.tracking.uri, settings.study.storage)
    patience = settings.tracking.outage_timeout
    wait = partial(patiently, uri=settings.tracking.uri, patience=patience, spool=spool.directory)
    found = []
    for handle in handles:
        parent = handle.parent_run_id
        run = wait(partial(handle.client.get_run, parent)) if parent else None
        if run is not None and run.info.status == "FINISHED":
            best_run = run.data.tags.get("best_run_id", "-")
            summary = summarize(handle.study) | {"best_run_id": best_run}
            found.append(StudyOutcome(handle, summary))
            continue
        entry.import_tensorflow_quietly(settings.train.compile_cache)
        with recorder(settings) as idle:  # never started: there is nothing to record
            found.append(run_study(handle, settings, idle, progress=False))
    return found
