"""Readable comparisons: base-10 logs of the errors and the learning rate, named study metrics.

Errors span six decades and MLflow's charts are linear, so every run also logs `log10_…` of
its final errors and the param `log10_learning_rate`; Optuna's studies name their objective.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest

from pipeline.core.problem_config import shipped
from pipeline.core.results import TrainResult
from pipeline.defaults import load
from pipeline.settings import CONSTANT_RATE
from pipeline.sweeping.study import make_storage, metric_name, open_study
from pipeline.tracking.recording import final_metrics, run_params


def _result(val_value_mse: float, val_deriv_mse: float) -> TrainResult:
    return TrainResult(
        history_epochs=np.array([1, 2]),
        history_loss=np.array([1.0, 0.5]),
        reports=[],
        val_value_mse=val_value_mse,
        val_deriv_mse=val_deriv_mse,
        epochs_run=2,
        diverged_at=None,
        stopped_early=False,
        weights=[],
        val_f=np.zeros(3),
        val_df=np.zeros(3),
        seconds=0.1,
    )


@pytest.mark.parametrize(("objective", "own"), [("value", -4.0), ("derivative", -2.0)])
def test_final_metrics_carry_the_log10_of_each_error(objective: str, own: float) -> None:
    final = final_metrics(load("train", [f"objective={objective}"]).objective, _result(1e-4, 1e-2))
    assert final["log10_val_value_mse"] == pytest.approx(-4.0)
    assert final["log10_val_deriv_mse"] == pytest.approx(-2.0)
    assert final["log10_objective_value"] == pytest.approx(own)
    assert final["log10_objective_value"] == pytest.approx(math.log10(final["objective_value"]))


@pytest.mark.parametrize("bad", [math.inf, math.nan, 0.0])
def test_a_non_finite_or_zero_error_gets_no_log10_metric(bad: float) -> None:
    final = final_metrics(load("train").objective, _result(bad, 1e-3))
    assert "log10_val_value_mse" not in final and "log10_objective_value" not in final
    assert final["log10_val_deriv_mse"] == pytest.approx(-3.0)
    assert "val_value_mse" in final  # the plain metric still says what happened


def test_run_params_carry_log10_learning_rate() -> None:
    log = shipped("log")
    params = run_params([10, 10], "sigmoid", "sgd", 0.1, CONSTANT_RATE, 100, 0, "value", log)
    assert float(params["log10_learning_rate"]) == pytest.approx(-1.0)
    params = run_params([8], "tanh", "adam", 3.2e-4, CONSTANT_RATE, 100, 0, "value", log)
    assert float(params["log10_learning_rate"]) == pytest.approx(math.log10(3.2e-4), abs=1e-6)


def test_metric_name_is_what_the_study_minimises() -> None:
    assert metric_name("value") == "val_value_mse"
    assert metric_name("derivative") == "val_deriv_mse"
    assert metric_name("sobolev") == "objective_value"  # a sum of both errors


def _open(storage, name: str, objective: str) -> optuna.Study:
    sampler, pruner = optuna.samplers.RandomSampler(), optuna.pruners.NopPruner()
    return open_study(storage, name, objective, sampler, pruner)[0]


def test_studies_name_their_metric_when_created_and_when_resumed(tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = make_storage(load("sweep", [f"study.storage={tmp_path / 'optuna.journal'}"]).study)
    assert _open(storage, "log-derivative", "derivative").metric_names == ["val_deriv_mse"]
    # A study made before metric names were set (by an older version) gets one on resume.
    optuna.create_study(storage=storage, study_name="old", direction="minimize")
    assert optuna.load_study(study_name="old", storage=storage).metric_names is None
    _open(storage, "old", "value")
    assert optuna.load_study(study_name="old", storage=storage).metric_names == ["val_value_mse"]
