"""One worker of many that a scheduler starts (`worker=<index>`): its share of every study, and
whether it is the one that closes a study's books and prints the sweep's summary.

Slurm (through Hydra's submitit launcher), a Kubernetes Indexed Job or a shell loop start N
copies of the same command; none of them knows how many others run or when they end. Each
trains until the study has `n_trials`, and the one that sees the study done (nothing running,
`n_trials` finished) and first claims it closes the study run and prints the summary. The claim
is atomic in every Optuna storage: creating the study named `closed_marker(...)` succeeds once.

A worker opening a study that is still short sets its run RUNNING (`ensure_parent_run`); if the
last trial ends and the closer finalises between that worker's read of the count and its
write, the write lands after the closer's and the run would stay RUNNING. So the closer marks
the study once its run is closed, and a worker that found the study claimed by another (it
may be that late writer) waits for the run to be FINISHED or for the mark, and closes it again
if its own reopening outlived the closer's end (`leave`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from pipeline.names import CLOSED_MARKER
from pipeline.sweeping.handle import StudyHandle, SweepSettings
from pipeline.sweeping.study import finished_count
from pipeline.sweeping.study_run import finalize
from pipeline.tracking import store
from pipeline.tracking.outage import on_storage, patiently

if TYPE_CHECKING:
    from pathlib import Path

    from pipeline.settings import TrackingConfig
    from pipeline.sweeping.worker import StudyOutcome
    from pipeline.tracking.recorder import BackgroundRecorder

CLOSED_ATTR = "closed"  # study user attr: the marker of the last claim whose closer closed the run
WAIT_FOR_CLOSER_S = 120.0  # a closer's finalising while MLflow answers, at most
POLL_S = 0.5


class WorkerFailed(RuntimeError):
    """A scheduled worker that stopped with exit code `code` (its error already printed).

    Under a Hydra multirun the task function returns or raises, never exits the process: the
    submitit launcher needs the job's result, and this fails the job (and the multirun, exit 1).
    """

    def __init__(self, index: int, code: int) -> None:
        super().__init__(f"worker {index} stopped with exit code {code}")
        self.index, self.code = index, code


def launch_key(sweep_dir: str | None) -> str:
    """What tells one launch of the workers from the next: a short hash of the multirun's
    directory (`hydra.sweep.dir`, the same for every job of one multirun); "" otherwise."""
    return hashlib.sha256(sweep_dir.encode()).hexdigest()[:8] if sweep_dir else ""


def closed_marker(study: str, launch: str, finished: int) -> str:
    """The name of the (empty) study whose creation claims closing `study` once it has
    `finished` trials, in this launch."""
    return CLOSED_MARKER.format(study=study, launch=launch or "-", finished=finished)


def claim(handle: StudyHandle, n_trials: int, launch: str) -> bool:
    """True for exactly one caller per launch and study state: the study is done (no trial
    RUNNING or WAITING, at least `n_trials` finished) and this process created its marker."""
    study = handle.study
    if study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        return False  # their workers still run: one of them sees the study done
    finished = finished_count(study)
    if finished < n_trials:
        return False
    try:
        handle.storage.create_new_study(
            [optuna.study.StudyDirection.MINIMIZE], closed_marker(handle.name, launch, finished)
        )
    except optuna.exceptions.DuplicatedStudyError:
        return False
    return True


def _claimed_marker(handle: StudyHandle, launch: str) -> str | None:
    """The marker of this launch for the study's finished count, if a worker created it."""
    marker = closed_marker(handle.name, launch, finished_count(handle.study))
    try:
        handle.storage.get_study_id_from_name(marker)
    except KeyError:
        return None
    return marker


def leave(handle: StudyHandle, launch: str, patience: float) -> bool:
    """A worker that did not claim the study: make sure its own reopening of the study run
    (when it opened the study, before this) does not outlast the closer's end. True when it
    had to close the run again.

    Unclaimed, nothing to do: the closer claims after this call, so it ends the run after this
    worker's reopening. Claimed: wait (up to `patience` s) until the run is FINISHED (ended
    after the reopening) or the closer has marked the study closed; a run still RUNNING then
    was reopened after the closer's end, and is ended again.
    """
    marker = on_storage(handle.storage, partial(_claimed_marker, handle, launch))
    if marker is None or handle.client is None or not handle.parent_run_id:
        return False
    deadline = time.monotonic() + patience
    while handle.client.get_run(handle.parent_run_id).info.status == "RUNNING":
        if on_storage(handle.storage, lambda: handle.study.user_attrs.get(CLOSED_ATTR)) == marker:
            store.end_run(handle.client, handle.parent_run_id)
            return True
        if time.monotonic() >= deadline:
            return False  # the closer died finalising: the next launch closes the study
        time.sleep(POLL_S)  # polling for another process's finalising to end
    return False


def close_or_leave(
    handle: StudyHandle, n_trials: int, launch: str, tracking: TrackingConfig, spool: Path
) -> bool:
    """Claim and close the study (finalise its run, then mark it closed), or `leave` it to the
    worker that claimed it. True when this worker closed it."""
    claimed = on_storage(handle.storage, partial(claim, handle, n_trials, launch))
    wait = partial(patiently, uri=tracking.uri, patience=tracking.outage_timeout, spool=spool)
    if not claimed:
        wait(partial(leave, handle, launch, WAIT_FOR_CLOSER_S))
        return False
    marker = on_storage(handle.storage, partial(_claimed_marker, handle, launch))
    wait(partial(finalize, handle))
    on_storage(handle.storage, partial(handle.study.set_user_attr, CLOSED_ATTR, marker))
    return True


def work(
    settings: SweepSettings,
    index: int,
    launch: str,
    recorder: BackgroundRecorder,
    recorder_of: Callable[[SweepSettings], BackgroundRecorder],
) -> list[StudyOutcome] | None:
    """This worker's share of each study in turn; the studies it claims it closes. Returns the
    outcomes of every study when it closed the last one (it prints the summary), else None."""
    from pipeline.sweeping import closing
    from pipeline.sweeping.worker import run_study

    handles, last = [], False
    tracking = settings.tracking
    for objective in settings.objectives:
        handle = StudyHandle.open(settings, objective, index)
        run_study(handle, settings, recorder, finalize_at_end=False)
        handles.append(handle)
        spool = recorder.spool.directory
        last = close_or_leave(handle, settings.study.n_trials, launch, tracking, spool)
    return closing.outcomes(handles, settings, recorder_of) if last else None
