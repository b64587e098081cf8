"""One Optuna trial: sample, train with pruning, and record it as a child run of its study run.

Optuna and MLflow tell the same story: the trial's state is mirrored in the run's
`optuna.state` tag, the run id is kept on the trial (`mlflow_run_id`), and a trial that ends
by exception or interrupt closes its run FAILED or KILLED before the error goes on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import optuna
from mlflow.entities import RunTag
from mlflow.tracking import MlflowClient

from pipeline import tracking
from pipeline.config import ObjectiveConfig, TrainConfig
from pipeline.data import Dataset
from pipeline.model import seeded_weights
from pipeline.objectives import get as get_objective
from pipeline.record import BackgroundRecorder, objective_value, run_params
from pipeline.search import Hyperparams, SearchSpace, layout_for, suggest
from pipeline.study import REASON, RUN_ID_ATTR, STATE, WORKER_ATTR, worker_id
from pipeline.trainer import Report, TrainSpec, train


class Diverged(optuna.TrialPruned):
    """A non-finite loss: the trial is PRUNED (it informs the sampler) with the epoch named."""


@dataclass(frozen=True)
class TrialContext:
    """What every trial of one study shares."""

    client: MlflowClient
    experiment_id: str
    parent_run_id: str
    study_name: str
    objective: ObjectiveConfig
    train: TrainConfig
    space: SearchSpace
    data: Dataset
    report_every: int
    recorder: BackgroundRecorder


def describe(hp: Hyperparams) -> str:
    """A short label such as `2x[10,10] sigmoid sgd lr=1.0e-01`."""
    units = ",".join(map(str, hp.hidden))
    return f"{len(hp.hidden)}x[{units}] {hp.activation} {hp.optimizer} lr={hp.learning_rate:.1e}"


def run_trial(trial: optuna.Trial, ctx: TrialContext) -> float:
    """The Optuna objective: returns the validation error, or raises TrialPruned."""
    hp = suggest(trial, ctx.space)
    objective = ctx.objective.name
    run_id = tracking.start_run(
        ctx.client,
        ctx.experiment_id,
        name=f"{ctx.study_name}-{trial.number:04d}",
        tags={
            tracking.ROLE: "trial",
            tracking.OBJECTIVE: objective,
            "optuna.study_name": ctx.study_name,
            "optuna.trial_number": str(trial.number),
            STATE: "RUNNING",
        },
        parent_run_id=ctx.parent_run_id,
    )
    trial.set_user_attr(RUN_ID_ATTR, run_id)
    trial.set_user_attr(WORKER_ATTR, worker_id())
    try:
        result = _train(trial, ctx, hp)
    except BaseException as error:
        killed = isinstance(error, KeyboardInterrupt)
        reason = "interrupted" if killed else f"{type(error).__name__}: {error}"
        trial.set_user_attr(REASON, reason)
        tags = [RunTag(k, v) for k, v in _tags("FAIL", reason).items()]
        ctx.client.log_batch(run_id, tags=tags, synchronous=True)
        tracking.end_run(ctx.client, run_id, "KILLED" if killed else "FAILED")
        raise
    params = run_params(
        hp.hidden,
        hp.activation,
        hp.optimizer,
        hp.learning_rate,
        ctx.train.epochs,
        ctx.train.seed,
        objective,
        ctx.data.problem,
    )
    params |= {k: v for k, v in trial.params.items() if k.startswith("units_l")}
    if result.diverged_at is not None:
        state, reason = "PRUNED", f"diverged: non-finite loss at epoch {result.diverged_at}"
    elif result.stopped_early:
        state, reason = "PRUNED", f"pruned at epoch {result.epochs_run} by the pruner"
    else:
        state, reason = "COMPLETE", None
    if reason:
        trial.set_user_attr(REASON, reason)
    label = f"{ctx.study_name} #{trial.number}"
    tags = _tags(state, reason)
    ctx.recorder.submit(run_id, result, ctx.data, params, ctx.objective, label, tags)
    if result.diverged_at is not None:
        raise Diverged(reason)
    if result.stopped_early:
        raise optuna.TrialPruned(reason)
    return objective_value(ctx.objective, result)


def _tags(state: str, reason: str | None) -> dict[str, str]:
    return {STATE: state} | ({REASON: reason} if reason else {})


def _spec(ctx: TrialContext, hp: Hyperparams) -> TrainSpec:
    return TrainSpec(
        activation=hp.activation,
        optimizer=hp.optimizer,
        learning_rate=hp.learning_rate,
        epochs=ctx.train.epochs,
        objective=ctx.objective.name,
        anchor_weight=ctx.objective.anchor_weight,
        deriv_weight=ctx.objective.deriv_weight,
        log_every=ctx.train.log_every,
        report_every=ctx.report_every,
    )


def _train(trial: optuna.Trial, ctx: TrialContext, hp: Hyperparams):
    spec = _spec(ctx, hp)
    minimised = get_objective(ctx.objective.name).minimised

    def report(progress: Report) -> bool:
        value = minimised(progress.val_value_mse, progress.val_deriv_mse, spec.deriv_weight)
        if not math.isfinite(value):
            return False
        trial.report(value, progress.epoch)
        return trial.should_prune()

    weights = seeded_weights(hp.hidden, ctx.train.seed)
    return train(spec, weights, ctx.data, on_report=report, layout=layout_for(ctx.space, hp))
