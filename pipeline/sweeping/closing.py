"""After a sweep's local worker processes stop: the books of each study, closed from here.

Interrupted: what the spool holds is sent, leftovers are repaired and each study run ends
KILLED, all quickly and not at all while MLflow does not answer (the rerun does it then).
Done: each study's summary; a study whose books no worker closed (one died) is finalised here.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial, TrialState

from pipeline import entry
from pipeline.names import PARENT_ATTR
from pipeline.sweeping import consistency
from pipeline.sweeping.handle import SweepSettings
from pipeline.sweeping.study import make_storage, study_name
from pipeline.sweeping.study_run import summarize
from pipeline.tracking import delivery, store
from pipeline.tracking.outage import QUICK_S, TrackingOutage, patiently
from pipeline.tracking.spool import Spool

if TYPE_CHECKING:
    from pipeline.sweeping.worker import StudyOutcome
    from pipeline.tracking.recorder import BackgroundRecorder


def _studies(settings: SweepSettings) -> list[tuple[str, optuna.Study]]:
    storage, n = make_storage(settings.study), len(settings.objectives)
    names = [study_name(settings.study.name, o.name, n) for o in settings.objectives]
    return [(name, optuna.load_study(study_name=name, storage=storage)) for name in names]


def close_parents(settings: SweepSettings, status: str) -> None:
    """Send what waits, repair leftovers and end each study's parent run as `status`."""
    spool = Spool.of_sweep(settings.tracking.uri, settings.study.storage)
    quickly = partial(patiently, uri=settings.tracking.uri, patience=QUICK_S, spool=spool.directory)
    try:
        client, experiment = quickly(partial(store.connect, settings.tracking))
        delivery.send_waiting(spool, QUICK_S, lambda line: None)
        for (name, study), objective in zip(_studies(settings), settings.objectives, strict=True):
            parent = study.user_attrs.get(PARENT_ATTR)

            def record_failed(
                t: FrozenTrial, reason: str, name=name, parent=parent, objective=objective.name
            ) -> None:
                args = (name, experiment, parent, objective, t, reason)
                delivery.send_now(spool, consistency.failed_record(*args), QUICK_S)

            quickly(partial(consistency.repair, study, client, record_failed))
            if parent and not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                quickly(partial(store.end_run, client, parent, status))
    except TrackingOutage:
        pass  # the spool keeps the records; the rerun sends them and reopens the study runs


def outcomes(
    settings: SweepSettings, recorder: Callable[[SweepSettings], BackgroundRecorder]
) -> list[StudyOutcome]:
    """Each study's summary; a study whose books a worker could not close (it died) is
    finalised here, the one case where this process needs TensorFlow."""
    from pipeline.sweeping.worker import StudyOutcome, run_study

    spool = Spool.of_sweep(settings.tracking.uri, settings.study.storage)
    patience = settings.tracking.outage_timeout
    wait = partial(patiently, uri=settings.tracking.uri, patience=patience, spool=spool.directory)
    client, experiment_id = wait(partial(store.connect, settings.tracking))
    found = []
    for (name, study), objective in zip(_studies(settings), settings.objectives, strict=True):
        parent = study.user_attrs.get(PARENT_ATTR, "")
        run = wait(partial(client.get_run, parent)) if parent else None
        if run is not None and run.info.status == "FINISHED":
            summary = summarize(study) | {"best_run_id": run.data.tags.get("best_run_id", "-")}
            found.append(StudyOutcome(objective.name, name, parent, experiment_id, summary))
            continue
        entry.import_tensorflow_quietly()
        with recorder(settings) as idle:  # never started: there is nothing to record
            n = len(settings.objectives)
            found.append(run_study(settings, objective, n, idle, progress=False))
    return found
