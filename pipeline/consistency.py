"""Keep Optuna and MLflow telling the same story: find orphans, repair what is safe to repair.

`check` compares a study's trials with the trial runs under its parent run and lists every
mismatch; `repair` fails trials whose worker on this host is dead (and re-enqueues them, as
Optuna's heartbeat retry does for RDB storages) and closes runs left RUNNING as FAILED/KILLED.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from dataclasses import dataclass, field

import optuna
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.trial import TrialState

from pipeline import tracking
from pipeline.study import REASON, RUN_ID_ATTR, STATE, WORKER_ATTR

with warnings.catch_warnings():
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    RETRY = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)


@dataclass
class Findings:
    """Mismatches between a study and its MLflow runs."""

    trials_without_run: list[int] = field(default_factory=list)
    runs_without_trial: list[str] = field(default_factory=list)
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


def trial_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list:
    """Every trial run nested under the study's parent run."""
    return client.search_runs(
        [experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        max_results=50_000,
    )


def check(
    study: optuna.Study, client: MlflowClient, experiment_id: str, parent_run_id: str
) -> Findings:
    """List orphans: finished trials without a run, runs without a trial, stale RUNNING ones."""
    found = Findings()
    runs = {r.info.run_id: r for r in trial_runs(client, experiment_id, parent_run_id)}
    trials = study.get_trials(deepcopy=False)
    claimed = set()
    for t in trials:
        run_id = t.user_attrs.get(RUN_ID_ATTR)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and run_id not in runs:
            found.trials_without_run.append(t.number)
        if t.state == TrialState.RUNNING and _dead_local_worker(t):
            found.stale_running_trials.append(t.number)
        if run_id in runs:
            claimed.add(run_id)
            run = runs[run_id]
            tagged = run.data.tags.get(STATE)
            if t.state.is_finished() and run.info.status == "RUNNING":
                found.stale_running_runs.append(run_id)
            elif t.state.is_finished() and tagged != t.state.name:
                found.state_mismatches.append(f"trial {t.number} {t.state.name} vs run {tagged}")
    found.runs_without_trial = sorted(set(runs) - claimed)
    return found


def repair(study: optuna.Study, client: MlflowClient, settled: set[int] | None = None) -> list[str]:
    """Fail trials of dead local workers (re-enqueued) and close their runs; say what was done.

    `settled` (kept by a worker across calls) holds failed trials whose runs are known closed,
    so the per-trial pass asks MLflow only about newly failed ones.
    """
    done = []
    settled = set() if settled is None else settled
    # RDB storages: trials whose heartbeat stopped (a worker on any machine died) fail and retry.
    storage = study._storage
    if isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage):
        stale = storage._get_stale_trial_ids(study._study_id)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        for trial_id in stale:
            number = storage.get_trial_number_from_id(trial_id)
            done.append(f"trial {number}: heartbeat stale; failed, retried")
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _dead_local_worker(t):
            continue
        study.tell(t.number, state=TrialState.FAIL)
        RETRY(study, study._storage.get_trial(t._trial_id))
        done.append(
            f"trial {t.number}: worker {t.user_attrs[WORKER_ATTR]} is gone; failed, retried"
        )
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        run_id = _still_running(t, client, settled)
        if run_id:
            reason = "worker died (heartbeat lost or process gone)"
            client.set_tag(run_id, STATE, "FAIL")
            client.set_tag(run_id, REASON, reason)
            tracking.end_run(client, run_id, "KILLED")
            done.append(f"run {run_id} of trial {t.number}: closed as KILLED ({reason})")
    done += _close_unrecorded(study, client, settled)
    return done


def _still_running(
    t: optuna.trial.FrozenTrial, client: MlflowClient, settled: set[int]
) -> str | None:
    """The run id of a finished trial whose run is still RUNNING; the trial is then settled
    (its run's status known), so later passes do not ask MLflow about it again."""
    run_id = t.user_attrs.get(RUN_ID_ATTR)
    if not run_id or t.number in settled:
        return None
    try:
        status = client.get_run(run_id).info.status
    except Exception:
        return None
    settled.add(t.number)
    return run_id if status == "RUNNING" else None


def _close_unrecorded(study: optuna.Study, client: MlflowClient, settled: set[int]) -> list[str]:
    """Runs of finished trials whose local worker died before their recording was done: the
    trial stands in Optuna; the run is closed KILLED with the trial's state and value."""
    done = []
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    for t in finished:
        run_id = (
            t.number not in settled and _dead_local_worker(t) and _still_running(t, client, settled)
        )
        if not run_id:
            continue
        reason = "worker died before the run's recording was done"
        tags = {STATE: t.state.name, REASON: reason}
        metrics = {"objective_value": t.value} if t.value is not None else {}
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), int(time.time() * 1000), 0) for k, v in metrics.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
            synchronous=True,
        )
        tracking.end_run(client, run_id, "KILLED")
        done.append(f"run {run_id} of trial {t.number}: closed as KILLED ({reason})")
    return done
