"""One Optuna trial: sample, train with pruning, and hand the finished trial to the recorder.

Training and Optuna never wait on MLflow: a finished trial (COMPLETE, PRUNED or FAIL, an
interrupt included) becomes one `TrialRecord` (`pipeline.spool`), which the recorder turns into
the trial's child run of its study run whenever the tracking store can take it. The run carries
the trial's state in `optuna.state` and is found by its tags (study run, `optuna.trial_number`).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna

from pipeline.config import ObjectiveConfig, TrainConfig
from pipeline.data import Dataset
from pipeline.model import seeded_weights
from pipeline.record import BackgroundRecorder, objective_value, run_params
from pipeline.results import TrainResult
from pipeline.search import Hyperparams, SearchSpace, suggest
from pipeline.spool import TrialRecord, trial_record
from pipeline.study import REASON, WORKER_ATTR, worker_id
from pipeline.trainer import Report, TrainSpec, train


class Diverged(optuna.TrialPruned):
    """A non-finite loss: the trial is PRUNED (it informs the sampler) with the epoch named."""


@dataclass(frozen=True)
class TrialContext:
    """What every trial of one study shares."""

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


def outcome(result: TrainResult) -> tuple[str, str | None]:
    """Optuna's state for a trained trial and why it stopped early, if it did."""
    if result.diverged_at is not None:
        return "PRUNED", f"diverged: non-finite loss at epoch {result.diverged_at}"
    if result.stopped_early:
        return "PRUNED", f"pruned at epoch {result.epochs_run} by the pruner"
    return "COMPLETE", None


def trial_params(
    hp: Hyperparams, train_cfg: TrainConfig, objective: str, sampled: Mapping[str, Any]
) -> dict[str, Any]:
    """The params a trial's run carries: the uniform ones plus the sampled per-layer widths."""
    params = run_params(
        hp.hidden,
        hp.activation,
        hp.optimizer,
        hp.learning_rate,
        train_cfg.epochs,
        train_cfg.seed,
        objective,
    )
    return params | {k: v for k, v in sampled.items() if k.startswith("units_l")}


def record_of(ctx: TrialContext, number: int, state: str, **details: Any) -> TrialRecord:
    """`trial_record` for trial `number` of this context's study (see its keyword arguments)."""
    return trial_record(
        experiment_id=ctx.experiment_id,
        parent_run_id=ctx.parent_run_id,
        study_name=ctx.study_name,
        number=number,
        objective=ctx.objective.name,
        state=state,
        **details,
    )


def run_trial(trial: optuna.Trial, ctx: TrialContext) -> float:
    """The Optuna objective: returns the validation error, or raises TrialPruned. Whatever
    happens, the finished trial's record is spooled before Optuna learns its state."""
    start = time.time()
    params: dict[str, Any] = {}
    try:
        trial.set_user_attr(WORKER_ATTR, worker_id())
        hp = suggest(trial, ctx.space)
        params = trial_params(hp, ctx.train, ctx.objective.name, trial.params)
        result = _train(trial, ctx, hp)
        state, reason = outcome(result)
        value = objective_value(ctx.objective.name, result)
        if state == "COMPLETE" and not math.isfinite(value):
            raise FloatingPointError(f"objective_value is {value}")
        details = {"reason": reason, "params": params, "result": result, "data": ctx.data}
        ctx.recorder.submit(record_of(ctx, trial.number, state, start=start, **details))
    except BaseException as error:
        killed = isinstance(error, KeyboardInterrupt)
        reason = "interrupted" if killed else f"{type(error).__name__}: {error}"
        details = {"reason": reason, "killed": killed, "params": params, "start": start}
        try:  # neither may replace the trial's own error (an interrupt must stay one)
            ctx.recorder.submit(record_of(ctx, trial.number, "FAIL", **details))
        except Exception as lost:
            print(f"warning: trial {trial.number} not recorded: {lost!r}", file=sys.stderr)
        with contextlib.suppress(Exception):  # the storage may be what failed
            trial.set_user_attr(REASON, reason)
        raise
    if reason:
        trial.set_user_attr(REASON, reason)
    if result.diverged_at is not None:
        raise Diverged(reason)
    if state == "PRUNED":
        raise optuna.TrialPruned(reason)
    return value


def _spec(ctx: TrialContext, hp: Hyperparams) -> TrainSpec:
    return TrainSpec(
        activation=hp.activation,
        optimizer=hp.optimizer,
        learning_rate=hp.learning_rate,
        epochs=ctx.train.epochs,
        objective=ctx.objective.name,
        anchor_weight=ctx.objective.anchor_weight,
        anchor_x=ctx.objective.anchor_x,
        log_every=ctx.train.log_every,
        report_every=ctx.report_every,
    )


def _train(trial: optuna.Trial, ctx: TrialContext, hp: Hyperparams):
    spec = _spec(ctx, hp)
    own = "val_value_mse" if ctx.objective.name == "value" else "val_deriv_mse"

    def report(progress: Report) -> bool:
        value = getattr(progress, own)
        if not math.isfinite(value):
            return False
        trial.report(value, progress.epoch)
        return trial.should_prune()

    weights = seeded_weights(hp.hidden, ctx.train.seed)
    return train(spec, weights, ctx.data, on_report=report, pad_width=ctx.space.units.high)
