"""The study's parent run in MLflow: found or created once per study, finalised at the end.

The parent run id is recorded on the Optuna study (`mlflow_parent_run_id`), so every worker,
on any machine and after any restart, logs its trials under the same parent run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from mlflow.tracking import MlflowClient

from pipeline.names import (
    BASELINE_ATTR,
    BEST_ALIAS,
    BEST_TRIAL_TAG,
    MODEL_TAG,
    OBJECTIVE_TAG,
    PARENT_ATTR,
    ROLE_TAG,
    STUDY_TAG,
)
from pipeline.settings import ObjectiveConfig, redact
from pipeline.sweeping.space import trial_params
from pipeline.sweeping.study import finished_count
from pipeline.tracking import store
from pipeline.tracking.plots import save_study_plots

if TYPE_CHECKING:
    from pipeline.sweeping.handle import StudyHandle, SweepSettings

WAIT_FOR_CREATOR_S = 60.0
WAIT_FOR_BEST_RUN_S = 10.0


def _existing(client: MlflowClient, run_id: str | None) -> str | None:
    if not run_id:
        return None
    try:
        client.get_run(run_id)
    except Exception:  # recorded by a study whose tracking store was another one
        return None
    return run_id


def _search(client: MlflowClient, experiment_id: str, study_name: str) -> str | None:
    runs = client.search_runs(
        [experiment_id],
        filter_string=(f"tags.`{ROLE_TAG}` = 'study' and tags.`{STUDY_TAG}` = '{study_name}'"),
        max_results=1,
        order_by=["attributes.start_time ASC"],
    )
    return runs[0].info.run_id if runs else None


def ensure_parent_run(
    study: optuna.Study,
    created: bool,
    client: MlflowClient,
    experiment_id: str,
    objective: str,
    params: Mapping[str, Any],
    reopen: bool = True,
) -> str:
    """The study's parent run id: reused when recorded, else created and recorded on the study.

    The worker that created the study creates the run; others wait briefly for it to appear
    (or find it by tag), so concurrent workers share one parent. The run is set RUNNING, unless
    not `reopen` (the study is done: a late worker must not reopen a run already closed).
    """
    run_id = _existing(client, study.user_attrs.get(PARENT_ATTR))
    deadline = time.monotonic() + (0 if created else WAIT_FOR_CREATOR_S)
    while run_id is None and time.monotonic() < deadline:
        time.sleep(0.25)  # another worker is creating the parent run right now
        run_id = _existing(client, study.user_attrs.get(PARENT_ATTR))  # read from the storage
    run_id = run_id or _search(client, experiment_id, study.study_name)
    if run_id is None:
        run_id = store.start_run(
            client,
            experiment_id,
            name=study.study_name,
            tags={
                ROLE_TAG: "study",
                OBJECTIVE_TAG: objective,
                STUDY_TAG: study.study_name,
            },
        )
        client.log_batch(run_id, params=_params(params), synchronous=True)
        study.set_user_attr(PARENT_ATTR, run_id)
    elif reopen:
        client.update_run(run_id, status="RUNNING")
    return run_id


def parent_params(settings: SweepSettings, objective: ObjectiveConfig) -> dict[str, Any]:
    """What the study run records of its setup: the problem (f and f' as SymPy text), data,
    search space, the objective's own settings, the storage URL with any password masked."""
    s = settings
    params: dict[str, Any] = {
        "objective": objective.name,
        "n_trials": s.study.n_trials,
        "sampler": s.study.sampler,
        "sampler_options": s.study.sampler_options,
        "pruner": s.study.pruner,
        "pruner_options": s.study.pruner_options,
        "study_seed": s.study.seed,
        "report_every": s.study.report_every,
        "storage": redact(s.study.storage),
        "epochs": s.train.epochs,
        "seed": s.train.seed,
        "lr_decay_fraction": s.train.lr_decay.fraction,  # every trial's but the baseline's
        "lr_decay_final": s.train.lr_decay.final,
    }
    params |= {"problem": s.problem.name, "problem_f": s.problem.expression}
    params |= {"problem_df": s.problem.derivative, "problem_label": s.problem.label}
    if s.problem.equation is not None:  # f is its exact solution ("nan": none known)
        params |= {"problem_equation": s.problem.equation}
        params |= {"problem_conditions": list(s.problem.conditions)}
    params |= {f"data.{k}": v for k, v in vars(s.data).items()}
    params |= {f"search.{k}": v for k, v in vars(s.search).items()}
    return params | objective.params()


def _params(params: Mapping[str, Any]):
    from mlflow.entities import Param

    return [Param(k, str(v)[:6000]) for k, v in params.items()]


def summarize(study: optuna.Study) -> dict[str, Any]:
    """Trial counts, the best trial and value, and the baseline's value, from Optuna alone."""
    trials = study.get_trials(deepcopy=False)
    counts = {s.name: 0 for s in optuna.trial.TrialState}
    for t in trials:
        counts[t.state.name] += 1
    summary: dict[str, Any] = {"finished": finished_count(study), "counts": counts}
    try:
        best = study.best_trial
    except ValueError:
        best = None
    if best is not None:
        summary |= {"best_value": best.value, "best_trial": best}
    baseline = [t for t in trials if t.user_attrs.get(BASELINE_ATTR) and t.value is not None]
    if baseline:
        summary["baseline_value"] = baseline[0].value
    return summary


def best_run_id(client: MlflowClient, parent_run_id: str, number: int) -> str | None:
    """The run of the best trial, found by its tags; waits briefly for one another worker's
    recorder may still be sending (its trial finished, its record not yet in MLflow)."""
    from pipeline.tracking.delivery import find_trial_run

    experiment_id = client.get_run(parent_run_id).info.experiment_id
    deadline = time.monotonic() + WAIT_FOR_BEST_RUN_S
    while True:
        run = find_trial_run(client, experiment_id, parent_run_id, number)
        if run is not None or time.monotonic() >= deadline:
            return run.info.run_id if run is not None else None
        time.sleep(0.5)  # polling MLflow for a run another process is creating


def finalize(handle: StudyHandle) -> dict[str, Any]:
    """Best value and trial, trial counts, study plots and the best model; the run is FINISHED.

    Idempotent: any worker that sees the study done may call it. Returns `summarize(study)`
    plus `best_run_id`, the best trial's run (also the study run's tag).
    """
    study, client, parent_run_id = handle.study, handle.client, handle.parent_run_id
    summary = summarize(study)
    metrics = {f"n_{k.lower()}": float(v) for k, v in summary["counts"].items() if k != "WAITING"}
    tags: dict[str, str] = {}
    best = summary.get("best_trial")
    if best is not None:
        best_run = best_run_id(client, parent_run_id, best.number)
        metrics["best_value"] = float(best.value)
        tags = {BEST_TRIAL_TAG: str(best.number)}
        if best_run is None:
            print(f"warning: the best trial #{best.number} has no run yet", file=sys.stderr)
        else:
            summary["best_run_id"] = tags["best_run_id"] = best_run
            _log_best_model(client, best_run, best)
            _register_or_warn(client, study.study_name, best_run)
    if "baseline_value" in summary:
        metrics["baseline_value"] = float(summary["baseline_value"])
    from mlflow.entities import Metric, RunTag

    now, n_trials = int(time.time() * 1000), sum(summary["counts"].values())
    client.log_batch(
        parent_run_id,
        metrics=[Metric(k, v, now, n_trials) for k, v in metrics.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
        synchronous=True,
    )
    with store.scratch_dir() as scratch:
        if save_study_plots(study, Path(scratch)):
            store.log_directory(client, parent_run_id, Path(scratch), "plots")
    store.end_run(client, parent_run_id)
    return summary


def _log_best_model(client: MlflowClient, run_id: str, best: optuna.trial.FrozenTrial) -> None:
    """The best trial's network as an MLflow model in its run, once (a failure is a warning:
    the study's books still close)."""
    from pipeline.core.model import build_model
    from pipeline.tracking.recording import load_weights

    if client.get_run(run_id).data.tags.get(MODEL_TAG) == "logged":
        return
    params = trial_params(best)
    hidden = [params[f"units_l{i}"] for i in range(params["n_layers"])]
    model = build_model(hidden, params["activation"], seed=0)
    try:
        model.set_weights(load_weights(client, run_id))
        store.log_keras_model(client, run_id, model)
        client.set_tag(run_id, MODEL_TAG, "logged")
    except Exception as error:
        print(f"warning: best model not logged for run {run_id}: {error}", file=sys.stderr)


def register_best(client: MlflowClient, name: str, run_id: str) -> str:
    """Register the model logged in `run_id` as `name` and point its alias `best` there.

    Returns the version. Idempotent: a version of `run_id` is reused, so finalising again
    changes nothing; a resumed study whose best trial changed gets a new version and the
    alias moves to it (earlier versions stay, for the record).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if versions:
        version = min(versions, key=lambda v: int(v.version)).version
    else:
        run = client.get_run(run_id)
        models = client.search_logged_models(
            [run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'"
        )
        if not models:
            raise LookupError(f"run {run_id} holds no logged model")
        try:
            client.create_registered_model(name, description=f"The best model of study {name}")
        except MlflowException as error:
            if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
        model_id = models[0].model_id
        version = client.create_model_version(
            name, source=f"models:/{model_id}", run_id=run_id, model_id=model_id
        ).version
    client.set_registered_model_alias(name, BEST_ALIAS, str(version))
    return str(version)


def _register_or_warn(client: MlflowClient, name: str, run_id: str) -> None:
    try:
        register_best(client, name, run_id)
    except Exception as error:  # the study's books still close; say what is missing
        print(f"warning: best model of {name} not registered: {error}", file=sys.stderr)
