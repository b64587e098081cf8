"""What a trained network leaves in MLflow: uniform params, history, final metrics, plots, weights.

Shared by `pipeline.train` and every sweep trial, so single runs and trials compare in one view.
Imports no TensorFlow: a sweep records its trials from a separate process that needs none.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.tracking import MlflowClient

from pipeline.core.data import Dataset
from pipeline.core.objectives import get as get_objective
from pipeline.core.problems import EXPR, Problem
from pipeline.core.results import TrainResult
from pipeline.settings import LrDecay, ObjectiveConfig
from pipeline.tracking import store
from pipeline.tracking.ode_plots import residual_metrics, save_equation_plots
from pipeline.tracking.plots import Truth, save_run_plots

WEIGHTS_ARTIFACT = "weights/weights.npz"


def run_params(
    hidden: Sequence[int],
    activation: str,
    optimizer: str,
    learning_rate: float,
    lr_decay: LrDecay,
    epochs: int,
    seed: int,
    objective: str,
    problem: Problem,
) -> dict[str, Any]:
    """The params every run carries, whatever produced it (parallel coordinates needs them all):
    the network, its training, the objective and the problem (`problem_f`: an `expr`'s f)."""
    expression = {"problem_f": problem.expression} if problem.name == EXPR else {}
    if problem.equation is not None:
        expression = {"problem_equation": problem.equation,
                      "problem_conditions": list(problem.conditions)}  # fmt: skip
    return {
        "n_layers": len(hidden),
        "hidden": list(hidden),
        "n_params": count_params(hidden),
        "activation": activation,
        "optimizer": optimizer,
        "learning_rate": learning_rate,
        # MLflow's charts have linear axes; learning rates span decades (sampled on a log scale).
        "log10_learning_rate": round(math.log10(learning_rate), 6),
        "lr_decay_fraction": lr_decay.fraction,
        "lr_decay_final": lr_decay.final,
        "epochs": epochs,
        "seed": seed,
        "objective": objective,
        "problem": problem.name,
    } | expression


def count_params(hidden: Sequence[int]) -> int:
    """Weights plus biases of the network with these hidden widths and one input and output."""
    widths = [1, *hidden, 1]
    return sum(a * b + b for a, b in itertools.pairwise(widths))


def objective_value(objective: ObjectiveConfig, result: TrainResult) -> float:
    """What a study minimises: the objective's own validation error (the registry's)."""
    minimised = get_objective(objective.name).minimised
    return minimised(result, objective.deriv_weight, objective.condition_weight)


def final_metrics(
    objective: ObjectiveConfig, result: TrainResult, data: Dataset | None = None
) -> dict[str, float]:
    """Final validation errors of both objectives, the minimised one, their log10, run facts;
    a residual run's residual and condition errors, and with its exact solution known (`data`)
    its errors against it, the relative L2 error `val_l2re` among them."""
    errors = {
        "val_value_mse": result.val_value_mse,
        "val_deriv_mse": result.val_deriv_mse,
        "objective_value": objective_value(objective, result),
    }
    if get_objective(objective.name).residual:
        errors |= residual_metrics(result, data)
        if data is None or not data.problem.known:  # no exact solution: no errors against it
            del errors["val_value_mse"], errors["val_deriv_mse"]
    # A diverged run's error is inf or nan (and an exact fit's 0): it gets no log10 metric
    # rather than a crash or a made-up number; its plain metric still says what happened.
    logs = {f"log10_{k}": math.log10(v) for k, v in errors.items() if math.isfinite(v) and v > 0}
    facts = {
        "final_loss": result.final_loss,
        "epochs_run": result.epochs_run,
        "train_seconds": result.seconds,
    }
    return errors | logs | facts


def record_training(
    client: MlflowClient,
    run_id: str,
    result: TrainResult,
    data: Dataset,
    params: Mapping[str, Any],
    objective: ObjectiveConfig,
    label: str,
    tags: Mapping[str, str] | None = None,
    timestamp: int | None = None,
) -> dict[str, float]:
    """Log a trained network into `run_id` (one metric batch, one upload); return the finals.

    With a fixed `timestamp` (ms) logging it again adds nothing: MLflow drops exact repeats."""
    final = final_metrics(objective, result, data)
    store.log_training(
        client,
        run_id,
        params,
        (result.history_epochs, result.history_loss),
        [(r.epoch, r.val_value_mse, r.val_deriv_mse) for r in result.reports if data.problem.known],
        final,
        final_step=result.epochs_run,
        tags=tags,
        timestamp=timestamp,
    )
    with store.scratch_dir() as scratch:
        root = Path(scratch)
        if result.val_residual is not None:
            save_equation_plots(root / "plots", data, result, label)
        save_run_plots(
            root / "plots",
            truth(data),
            result.val_f,
            result.val_df,
            result.history_epochs,
            result.history_loss,
            label,
            params.get("epochs"),
            curves=result.val_residual is None,
        )
        (root / "weights").mkdir()
        np.savez(root / WEIGHTS_ARTIFACT, *result.weights)
        store.log_directory(client, run_id, root)
    return final


def truth(data: Dataset) -> Truth:
    """What a run's plots draw the network against: the problem's f and f' on the validation
    grid and at the data points, with the problem's legend texts."""
    return Truth(
        x=data.x_val,
        f=data.y_val,
        df=data.dy_val,
        x_points=data.x_train,
        f_points=data.y_train,
        df_points=data.dy_train,
        f_text=data.problem.f_text,
        df_text=data.problem.df_text,
    )


def load_weights(client: MlflowClient, run_id: str) -> list[np.ndarray]:
    """The trained weights a run stored with `record_training`."""
    with store.scratch_dir() as scratch:
        path = client.download_artifacts(run_id, WEIGHTS_ARTIFACT, scratch)
        with np.load(path) as archive:
            return [archive[f"arr_{i}"] for i in range(len(archive.files))]
