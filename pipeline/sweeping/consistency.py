"""Keep Optuna and MLflow telling the same story: find orphans, repair what is safe to repair.

`check` compares a study's trials with the trial runs under its parent run (matched by their
`optuna.trial_number` tag) and lists every mismatch. `repair` fails trials whose worker is gone
(and re-enqueues them, as Optuna's heartbeat retry does for RDB storages), hands each to the
caller for its KILLED run, and closes runs a dead local worker left RUNNING.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import optuna
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from pipeline.names import PARENT_TAG, REASON, STATE_TAG, TRIAL_TAG, WORKER_ATTR
from pipeline.sweeping.experimental import experimental_quietly
from pipeline.sweeping.study import StaleTrials, retry_stale
from pipeline.tracking import store
from pipeline.tracking.spool import Spool, TrialRecord, trial_record

if TYPE_CHECKING:
    from pipeline.sweeping.handle import StudyHandle, SweepSettings

DIED = "worker died (heartbeat lost or process gone)"
UNCLAIMED_AFTER_S = 30.0  # a worker names itself on its trial within moments of asking
RecordFailed = Callable[[FrozenTrial, str], None]  # makes the run of a trial failed here
RETRY = retry_stale()


@dataclass
class Findings:
    """Mismatches between a study and its MLflow runs."""

    trials_without_run: list[int] = field(default_factory=list)
    runs_without_trial: list[str] = field(default_factory=list)
    duplicate_runs: list[str] = field(default_factory=list)
    stale_running_trials: list[int] = field(default_factory=list)
    stale_running_runs: list[str] = field(default_factory=list)
    state_mismatches: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not any(vars(self).values())

    def lines(self) -> list[str]:
        return [f"{k.replace('_', ' ')}: {v}" for k, v in vars(self).items() if v]


def _dead_local_worker(trial: optuna.trial.FrozenTrial) -> bool:
    host, _, pid = str(trial.user_attrs.get(WORKER_ATTR, "")).rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def trial_runs(
    client: MlflowClient, experiment_id: str, parent_run_id: str, running_only: bool = False
) -> list[Run]:
    """Every trial run nested under the study's parent run (or those still RUNNING)."""
    running = " and attributes.status = 'RUNNING'" if running_only else ""
    return client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'{running}",
        max_results=50_000,
        order_by=["attributes.start_time ASC"],
    )


def _by_trial(runs: list[Run]) -> tuple[dict[int, list[Run]], list[str]]:
    """Runs grouped by their trial number (oldest first), and the ids of runs without one."""
    grouped: dict[int, list[Run]] = {}
    untagged = []
    for run in runs:
        number = run.data.tags.get(TRIAL_TAG, "")
        if number.isdigit():
            grouped.setdefault(int(number), []).append(run)
        else:
            untagged.append(run.info.run_id)
    return grouped, untagged


def check(handle: StudyHandle) -> Findings:
    """List orphans: finished trials without a run, runs without a trial (or a second run of
    one), trials and runs left RUNNING, and runs whose state tag disagrees with Optuna."""
    found = Findings()
    runs = trial_runs(handle.client, handle.experiment_id, handle.parent_run_id)
    grouped, found.runs_without_trial = _by_trial(runs)
    trials = handle.study.get_trials(deepcopy=False)
    for t in trials:
        runs = grouped.pop(t.number, [])
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and not runs:
            found.trials_without_run.append(t.number)
        if t.state == TrialState.RUNNING and _dead_local_worker(t):
            found.stale_running_trials.append(t.number)
        if not runs:
            continue
        found.duplicate_runs += [r.info.run_id for r in runs[1:]]
        run, tagged = runs[0], runs[0].data.tags.get(STATE_TAG)
        if t.state.is_finished() and run.info.status == "RUNNING":
            found.stale_running_runs.append(run.info.run_id)
        elif t.state.is_finished() and tagged != t.state.name:
            found.state_mismatches.append(f"trial {t.number} {t.state.name} vs run {tagged}")
    found.runs_without_trial += [r.info.run_id for runs in grouped.values() for r in runs]
    return found


def _fail_stale(handle: StudyHandle) -> list[FrozenTrial]:
    """RDB storages: fail (and retry) trials whose heartbeat stopped; every trial this process
    failed so since the last call (the storage's callback, `StaleTrials`, notes them)."""
    noticing = getattr(handle.storage, "heartbeat_stale_trial_callback", None)
    if not isinstance(noticing, StaleTrials):
        return []  # a journal file: no heartbeats
    with experimental_quietly():
        optuna.storages.fail_stale_trials(handle.study)
    return noticing.take()


def _unclaimed(trial: FrozenTrial) -> bool:
    """A trial no worker took up (its process lost the storage right after asking for it)."""
    started = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
    return WORKER_ATTR not in trial.user_attrs and time.time() - started > UNCLAIMED_AFTER_S


def _fail_dead_local(handle: StudyHandle) -> list[FrozenTrial]:
    """Fail (and retry) RUNNING trials whose worker on this host is gone, or that none took."""
    failed = []
    for t in handle.running():
        if not (_dead_local_worker(t) or _unclaimed(t)):
            continue
        try:
            handle.study.tell(t.number, state=TrialState.FAIL)
        except (RuntimeError, ValueError):  # another process failed it first
            continue
        failed.append(handle.storage.get_trial(handle.trial_id(t.number)))
        RETRY(handle.study, failed[-1])
    return failed


def failed_record(handle: StudyHandle, t: FrozenTrial, reason: str) -> TrialRecord:
    """The record of trial `t` of the study, failed because its worker is gone: its run
    (under the study run) ends KILLED with `reason`."""
    start = t.datetime_start.timestamp() if t.datetime_start else None
    return trial_record(
        experiment_id=handle.experiment_id,
        parent_run_id=handle.parent_run_id,
        study_name=handle.name,
        number=t.number,
        objective=handle.objective,
        state="FAIL",
        reason=reason,
        killed=True,
        start=start,
    )


def repair(
    handle: StudyHandle, record_failed: RecordFailed | None = None, close_runs: bool = False
) -> list[str]:
    """Fail trials whose worker is gone (re-enqueued) and pass each to `record_failed`, which
    makes its KILLED run. With `close_runs` (MLflow is asked only then), also close the runs
    that a dead local worker's recording left RUNNING. Returns what was done, one line each."""
    stale, dead = _fail_stale(handle), _fail_dead_local(handle)
    closed = "; its run closed as KILLED" if record_failed is not None else ""
    done = [f"trial {t.number}: heartbeat stale; failed, retried{closed}" for t in stale]
    for t in dead:
        worker = t.user_attrs.get(WORKER_ATTR)
        why = f"worker {worker} is gone" if worker else "no worker took it up"
        done.append(f"trial {t.number}: {why}; failed, retried{closed}")
    for t in stale + dead if record_failed is not None else []:
        record_failed(t, DIED)
    if close_runs:
        done += _close_left_running(handle)
    return done


def _close_left_running(handle: StudyHandle) -> list[str]:
    """Runs of finished trials left RUNNING by a local worker that died while recording them:
    the trial stands in Optuna; the run is closed KILLED with the trial's state and value."""
    client, parent = handle.client, handle.parent_run_id
    if not parent:
        return []
    experiment_id = client.get_run(parent).info.experiment_id
    grouped, _ = _by_trial(trial_runs(client, experiment_id, parent, running_only=True))
    done = []
    for t in handle.study.get_trials(deepcopy=False):
        runs = grouped.get(t.number, [])
        if not runs or not t.state.is_finished() or not _dead_local_worker(t):
            continue
        run_id = runs[0].info.run_id
        reason = DIED if t.state == TrialState.FAIL else "worker died before the run was recorded"
        tags = {STATE_TAG: t.state.name, REASON: reason}
        metrics = {"objective_value": t.value} if t.value is not None else {}
        store.end_run(client, run_id, "KILLED", tags=tags, metrics=metrics)
        done.append(f"run {run_id} of trial {t.number}: closed as KILLED ({reason})")
    return done


def check_sweep(settings: SweepSettings, spool: Spool) -> int:
    """`check=true`: send what `spool` holds (records of finished trials are facts, not repairs),
    then compare each study with its MLflow runs and print the findings; 0 when consistent."""
    from pipeline.sweeping.handle import StudyHandle
    from pipeline.sweeping.study import make_storage
    from pipeline.tracking.delivery import client_for, send_waiting

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    send_waiting(spool, settings.tracking.outage_timeout, print)
    client = client_for(settings.tracking.uri)
    experiment = client.get_experiment_by_name(settings.tracking.experiment)
    experiment_id = experiment.experiment_id if experiment is not None else None
    storage = make_storage(settings.study)
    clean = True
    for objective in settings.objectives:
        try:
            handle = StudyHandle.load(settings, objective.name, storage, client, experiment_id)
        except KeyError:
            print(f"{settings.study_name(objective.name)}: no such study")
            continue
        if experiment_id is None or handle.parent_run_id is None:
            print(f"{handle.name}: no MLflow study run recorded")
            clean = False
            continue
        found = check(handle)
        print(f"{handle.name}: {'consistent' if found.clean else 'INCONSISTENT'}")
        for line in found.lines():
            print(f"  {line}")
        clean = clean and found.clean
    return 0 if clean else 1
