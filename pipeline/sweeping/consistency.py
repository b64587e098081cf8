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
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import optuna
from mlflow.entities import Metric, Run, RunTag
from mlflow.tracking import MlflowClient
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

from pipeline.names import PARENT_ATTR, PARENT_TAG, REASON, STATE_TAG, TRIAL_TAG, WORKER_ATTR
from pipeline.tracking import store
from pipeline.tracking.spool import Spool, TrialRecord, trial_record

if TYPE_CHECKING:
    from pipeline.sweeping.handle import SweepSettings

DIED = "worker died (heartbeat lost or process gone)"
UNCLAIMED_AFTER_S = 30.0  # a worker names itself on its trial within moments of asking
RecordFailed = Callable[[FrozenTrial, str], None]  # makes the run of a trial failed here

with warnings.catch_warnings():
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    RETRY = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)


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


def check(
    study: optuna.Study, client: MlflowClient, experiment_id: str, parent_run_id: str
) -> Findings:
    """List orphans: finished trials without a run, runs without a trial (or a second run of
    one), trials and runs left RUNNING, and runs whose state tag disagrees with Optuna."""
    found = Findings()
    grouped, found.runs_without_trial = _by_trial(trial_runs(client, experiment_id, parent_run_id))
    trials = study.get_trials(deepcopy=False)
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


class _Noticing:
    """The storage's stale-trial callback (retry), noting the trials this process failed:
    Optuna also fails stale trials itself at the start of every `study.optimize` trial."""

    def __init__(self, retry: Callable[[optuna.Study, FrozenTrial], None] | None) -> None:
        self.retry, self.failed = retry, []

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.failed.append(trial)
        if self.retry is not None:
            self.retry(study, trial)


def _fail_stale(study: optuna.Study) -> list[FrozenTrial]:
    """RDB storages: fail (and retry) trials whose heartbeat stopped; every trial this process
    failed so, here or inside `study.optimize`, since the last call."""
    storage = study._storage
    if not (isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage)):
        return []
    backend = getattr(storage, "_backend", storage)
    if not isinstance(backend.heartbeat_stale_trial_callback, _Noticing):
        backend.heartbeat_stale_trial_callback = _Noticing(backend.heartbeat_stale_trial_callback)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    noticing = backend.heartbeat_stale_trial_callback
    failed, noticing.failed = noticing.failed, []
    return failed


def _unclaimed(trial: FrozenTrial) -> bool:
    """A trial no worker took up (its process lost the storage right after asking for it)."""
    started = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
    return WORKER_ATTR not in trial.user_attrs and time.time() - started > UNCLAIMED_AFTER_S


def _fail_dead_local(study: optuna.Study) -> list[FrozenTrial]:
    """Fail (and retry) RUNNING trials whose worker on this host is gone, or that none took."""
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not (_dead_local_worker(t) or _unclaimed(t)):
            continue
        try:
            study.tell(t.number, state=TrialState.FAIL)
        except (RuntimeError, ValueError):  # another process failed it first
            continue
        failed.append(study._storage.get_trial(t._trial_id))
        RETRY(study, failed[-1])
    return failed


def failed_record(
    name: str, experiment_id: str, parent: str, objective: str, t: FrozenTrial, reason: str
) -> TrialRecord:
    """The record of trial `t` of study `name`, failed because its worker is gone: its run
    (under the study run `parent`) ends KILLED with `reason`."""
    start = t.datetime_start.timestamp() if t.datetime_start else None
    return trial_record(
        experiment_id=experiment_id,
        parent_run_id=parent,
        study_name=name,
        number=t.number,
        objective=objective,
        state="FAIL",
        reason=reason,
        killed=True,
        start=start,
    )


def repair(
    study: optuna.Study,
    client: MlflowClient | None = None,
    record_failed: RecordFailed | None = None,
) -> list[str]:
    """Fail trials whose worker is gone (re-enqueued) and pass each to `record_failed`, which
    makes its KILLED run. With `client` (MLflow is asked only then), also close the runs that a
    dead local worker's recording left RUNNING. Returns what was done, one line each."""
    stale, dead = _fail_stale(study), _fail_dead_local(study)
    closed = "; its run closed as KILLED" if record_failed is not None else ""
    done = [f"trial {t.number}: heartbeat stale; failed, retried{closed}" for t in stale]
    for t in dead:
        worker = t.user_attrs.get(WORKER_ATTR)
        why = f"worker {worker} is gone" if worker else "no worker took it up"
        done.append(f"trial {t.number}: {why}; failed, retried{closed}")
    for t in stale + dead if record_failed is not None else []:
        record_failed(t, DIED)
    if client is not None:
        done += _close_left_running(study, client)
    return done


def _close_left_running(study: optuna.Study, client: MlflowClient) -> list[str]:
    """Runs of finished trials left RUNNING by a local worker that died while recording them:
    the trial stands in Optuna; the run is closed KILLED with the trial's state and value."""

    parent = study.user_attrs.get(PARENT_ATTR)
    if not parent:
        return []
    experiment_id = client.get_run(parent).info.experiment_id
    grouped, _ = _by_trial(trial_runs(client, experiment_id, parent, running_only=True))
    done = []
    for t in study.get_trials(deepcopy=False):
        runs = grouped.get(t.number, [])
        if not runs or not t.state.is_finished() or not _dead_local_worker(t):
            continue
        run_id = runs[0].info.run_id
        reason = DIED if t.state == TrialState.FAIL else "worker died before the run was recorded"
        tags = {STATE_TAG: t.state.name, REASON: reason}
        metrics = {"objective_value": t.value} if t.value is not None else {}
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), int(time.time() * 1000), 0) for k, v in metrics.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
            synchronous=True,
        )
        store.end_run(client, run_id, "KILLED")
        done.append(f"run {run_id} of trial {t.number}: closed as KILLED ({reason})")
    return done


def check_sweep(settings: SweepSettings, spool: Spool) -> int:
    """`check=true`: send what `spool` holds (records of finished trials are facts, not repairs),
    then compare each study with its MLflow runs and print the findings; 0 when consistent."""
    from pipeline.sweeping.study import make_storage, study_name
    from pipeline.tracking.delivery import client_for, send_waiting

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    send_waiting(spool, settings.tracking.outage_timeout, print)
    client = client_for(settings.tracking.uri)
    experiment = client.get_experiment_by_name(settings.tracking.experiment)
    storage = make_storage(settings.study)
    clean = True
    for objective in settings.objectives:
        name = study_name(settings.study.name, objective.name, len(settings.objectives))
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            print(f"{name}: no such study")
            continue
        parent = study.user_attrs.get(PARENT_ATTR)
        if experiment is None or parent is None:
            print(f"{name}: no MLflow study run recorded")
            clean = False
            continue
        found = check(study, client, experiment.experiment_id, parent)
        print(f"{name}: {'consistent' if found.clean else 'INCONSISTENT'}")
        for line in found.lines():
            print(f"  {line}")
        clean = clean and found.clean
    return 0 if clean else 1
