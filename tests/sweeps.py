"""Test helpers: `python -m pipeline.sweep` as a subprocess, and reading its books (the Optuna
study and the MLflow runs) afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from pipeline.names import (
    PARENT_ATTR,
    PARENT_TAG,
    ROLE_TAG,
    STATE_TAG,
    STUDY_TAG,
    TRIAL_TAG,
    WORKER_ATTR,
)

SWEEP = [sys.executable, "-m", "pipeline.sweep"]
SMALL = ["objective=value", "train.epochs=300", "study.report_every=100"]


def sweep_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env | extra


def run_sweep(cwd: Path, *overrides: str, timeout: float = 600, **env: str):
    """`python -m pipeline.sweep <overrides>` in `cwd`; the CompletedProcess (text)."""
    return subprocess.run(
        [*SWEEP, *overrides],
        cwd=cwd,
        env=sweep_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _default_sigint() -> None:
    # A shell without job control starts background jobs with SIGINT ignored, and children
    # inherit that; give the sweep the SIGINT a terminal's Ctrl-C would deliver.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_sweep(cwd: Path, *overrides: str, **env: str) -> subprocess.Popen:
    """The sweep as a background process (its own session), stdout/stderr piped as text."""
    return subprocess.Popen(
        [*SWEEP, *overrides],
        preexec_fn=_default_sigint,
        cwd=cwd,
        env=sweep_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def load_study(storage: str, name: str, cwd: Path | None = None):
    """The study through the product's own storage factory (journal path or RDB URL)."""
    from dataclasses import replace

    import optuna

    from pipeline.defaults import load
    from pipeline.sweeping.study import make_storage

    if "://" not in storage and cwd is not None:
        storage = str(cwd / storage)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    cfg = replace(load("sweep").study, storage=storage, heartbeat_interval=60)
    return optuna.load_study(study_name=name, storage=make_storage(cfg))


def running_trial(storage: str, name: str, cwd: Path | None = None, pid: int | None = None):
    """A RUNNING trial that has its MLflow run (and, given `pid`, runs in that process)."""
    from optuna.trial import TrialState

    try:
        study = load_study(storage, name, cwd)
    except (KeyError, FileNotFoundError, OSError):
        return None
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = str(t.user_attrs.get(WORKER_ATTR, ""))
        if worker and (pid is None or worker.endswith(f":{pid}")):
            return t
    return None


def trial_run(client, study, number: int):
    """The MLflow run of trial `number` of `study`, found by its tags under the study run (as
    the recorder finds it; a trial told during an outage has no `mlflow_run_id`); None if none."""
    parent = study.user_attrs[PARENT_ATTR]
    experiment = client.get_run(parent).info.experiment_id
    runs = client.search_runs(
        [experiment],
        filter_string=(f"tags.`{PARENT_TAG}` = '{parent}' and tags.`{TRIAL_TAG}` = '{number}'"),
    )
    assert len(runs) <= 1, f"trial {number} has {len(runs)} runs"
    return runs[0] if runs else None


def tracking_client(uri: str, cwd: Path | None = None):
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///") and cwd is not None:
        uri = f"sqlite:///{cwd / uri.removeprefix('sqlite:///')}"
    return MlflowClient(tracking_uri=uri)


def assert_books(
    storage: str,
    tracking_uri: str,
    name: str,
    n_trials: int,
    n_workers: int = 1,
    cwd: Path | None = None,
):
    """Optuna and MLflow agree: exactly n_trials finished however many workers (`n_workers`,
    named in a failure) ran the study, one run per finished trial with its number, one parent
    run, nothing RUNNING anywhere. Returns (study, runs)."""
    from optuna.trial import TrialState

    study = load_study(storage, name, cwd)
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    states = [t.state.name for t in trials]
    assert len(finished) == n_trials, f"{n_workers} worker(s): {states}"
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    client = tracking_client(tracking_uri, cwd)
    experiment = client.get_experiment_by_name("pipeline")
    parents = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{ROLE_TAG}` = 'study' and tags.`{STUDY_TAG}` = '{name}'",
    )
    assert len(parents) == 1, [p.info.run_id for p in parents]
    parent = parents[0]
    assert parent.info.run_id == study.user_attrs[PARENT_ATTR]
    assert parent.info.status == "FINISHED"
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'",
        max_results=10_000,
    )
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    numbers = [int(r.data.tags[TRIAL_TAG]) for r in runs]
    assert len(numbers) == len(set(numbers)), f"a trial logged twice: {sorted(numbers)}"
    by_number = {int(r.data.tags[TRIAL_TAG]): r for r in runs}
    for t in finished:
        run = by_number.get(t.number)
        assert run is not None, f"trial {t.number} has no run"
        assert run.data.tags[STATE_TAG] == t.state.name
        assert run.info.status == "FINISHED"
    return study, runs
