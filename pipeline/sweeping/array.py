"""One worker of many that a scheduler starts (`worker=<index>`): its share of every study, and
whether it is the one that closes a study's books and prints the sweep's summary.

Slurm (through Hydra's submitit launcher), a Kubernetes Indexed Job or a shell loop start N
copies of the same command; none of them knows how many others run or when they end. Each
trains until the study has `n_trials`, and the one that sees the study done (nothing running,
`n_trials` finished) and first claims it closes the study run and prints the summary. The claim
is atomic in every Optuna storage: creating the study named `closed_marker(...)` succeeds once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from pipeline.names import CLOSED_MARKER
from pipeline.sweeping.handle import StudyHandle, SweepSettings
from pipeline.sweeping.study import finished_count
from pipeline.sweeping.study_run import finalize
from pipeline.tracking.outage import on_storage, patiently

if TYPE_CHECKING:
    from pipeline.sweeping.worker import StudyOutcome
    from pipeline.tracking.recorder import BackgroundRecorder


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
        last = on_storage(handle.storage, partial(claim, handle, settings.study.n_trials, launch))
        if last:
            spool = recorder.spool.directory
            patiently(partial(finalize, handle), tracking.uri, tracking.outage_timeout, spool)
    return closing.outcomes(handles, settings, recorder_of) if last else None
