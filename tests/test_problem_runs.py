"""Problems and objectives trained: the Sobolev loss, what each objective trains on, one short run
per objective and problem, and a sweep on a non-log problem recorded like a log sweep.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from helpers import per_slot, stacked, train_spec
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig
from sweeping import RUN_PLOTS, Stores, artifact_paths, run_sweep_in, trial_of

from pipeline.core.data import Dataset, make_dataset
from pipeline.core.layout import Layout
from pipeline.core.losses import slot_losses, value_and_slope
from pipeline.core.model import seeded_weights
from pipeline.core.objectives import OBJECTIVES, get
from pipeline.core.problem_config import shipped
from pipeline.core.results import Report
from pipeline.core.trainer import train
from pipeline.defaults import load
from pipeline.names import BASELINE_ATTR, ROLE_TAG, STATE_TAG, STUDY_TAG

DATA = load("train").data  # the shipped data settings (conf/data/default.yaml)
ComposeFn = Callable[..., DictConfig]
PROBLEMS = ("log", "sin", "exp", "runge")
HIDDEN = (8, 8)


def _mse(a: tf.Tensor, b: np.ndarray) -> float:
    return float(tf.reduce_mean(tf.square(a - b)))


def _f_and_slope(weights: list[np.ndarray], x: np.ndarray) -> tuple[tf.Tensor, tf.Tensor]:
    """f and f' of one tanh network at x, as the trainer computes them (one slot)."""
    layout = Layout.exact(HIDDEN, "tanh", "sgd")
    w, net = stacked([weights], ["tanh"], layout)
    f, df = value_and_slope(w, *net, per_slot(x, 1), layout.activations)
    return f[0], df[0]


@pytest.mark.parametrize("deriv_weight", [1.0, 0.05])
def test_sobolev_loss_is_the_sum_of_its_two_terms(deriv_weight: float) -> None:
    data = make_dataset(replace(DATA, n_colloc=32), shipped("sin"), 0.0)
    weights = seeded_weights(HIDDEN, seed=1)
    x, y, dy = data.collocation(0)
    w = get("sobolev").weights(anchor_weight=1.0, deriv_weight=deriv_weight)
    f, df = _f_and_slope(weights, np.concatenate([x, [[data.anchor_x]]]))
    loss_weights = tf.constant([[w.value, w.slope, w.anchor]], tf.float32)
    loss = slot_losses(f[None], df[None], y[None], dy[None], data.anchor_y, loss_weights)
    value_term, slope_term = _mse(f[:-1], y), _mse(df[:-1], dy)
    assert value_term > 1e-3 and slope_term > 1e-3  # both terms matter
    assert float(loss[0]) == pytest.approx(value_term + deriv_weight * slope_term, rel=1e-6)


# --- what the trainer trains on -------------------------------------------------------------


def _first_loss(objective: str, data: Dataset) -> float:
    spec = train_spec("tanh", "adam", 1e-3, epochs=1, objective=objective, log_every=1)
    return float(train(spec, seeded_weights(HIDDEN, seed=2), data).history_loss[0])


TARGETS = sorted(o for o in OBJECTIVES if not get(o).residual)  # equations: test_equations.py


@pytest.mark.parametrize("objective", TARGETS)
def test_each_objective_trains_on_its_own_points_with_the_registry_weights(
    objective: str,
) -> None:
    """The first epoch's loss, recomputed by hand on the points the registry names."""
    data = make_dataset(replace(DATA, n_colloc=50), shipped("exp"), 0.0)
    entry, weights = get(objective), seeded_weights(HIDDEN, seed=2)
    x, y, dy = (data.x_train, data.y_train, data.dy_train)
    if entry.points == "colloc":
        x, y, dy = data.collocation(0)
    f, df = _f_and_slope(weights, x)
    at_anchor = float(_f_and_slope(weights, np.array([[data.anchor_x]], np.float32))[0][0, 0])
    w = entry.weights(anchor_weight=1.0, deriv_weight=1.0)
    expected = w.value * _mse(f, y) + w.slope * _mse(df, dy)
    expected += w.anchor * (at_anchor - data.anchor_y) ** 2
    assert _first_loss(objective, data) == pytest.approx(expected, rel=1e-5)


def test_resampled_collocation_trains_on_fresh_points_repeatably() -> None:
    fixed = make_dataset(replace(DATA, n_colloc=40), shipped("sin"), 0.0, seed=0)
    fresh = make_dataset(replace(DATA, n_colloc=40, resample=True), shipped("sin"), 0.0, seed=0)
    spec = train_spec("tanh", "adam", 1e-2, epochs=300, objective="derivative", report_every=100)
    start = seeded_weights(HIDDEN, seed=0)
    runs = [train(spec, start, d) for d in (fixed, fresh, fresh)]
    assert np.array_equal(runs[1].history_loss, runs[2].history_loss)  # seeded: repeatable
    assert not np.allclose(runs[0].history_loss, runs[1].history_loss)
    assert runs[1].val_deriv_mse < 0.5 * runs[1].reports[0].val_deriv_mse  # and it learns


# --- one short run per objective and problem, as `python -m pipeline.train` records it -------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs") / "mlflow.db"


@pytest.mark.parametrize("objective", TARGETS)
@pytest.mark.parametrize("problem", [*PROBLEMS, "expr"])
def test_every_objective_and_problem_trains_one_run(
    compose_cfg: ComposeFn, store: Path, problem: str, objective: str
) -> None:
    from pipeline.train import read_settings, run_one

    overrides = [f"problem={problem}", f"objective={objective}", "train.epochs=200"]
    overrides += ["model.activation=tanh", "train.optimizer=adam", "train.learning_rate=0.01"]
    overrides += [f"tracking.uri=sqlite:///{store}"]
    if problem == "expr":
        overrides += ['problem.f="sin(3*x)*exp(-x)"', "data.x_min=0", "data.x_max=3"]
    settings = read_settings(compose_cfg("train", overrides))
    outcome = run_one(settings, verbose=False)
    client = MlflowClient(f"sqlite:///{store}")
    run = client.get_run(outcome.run_id)
    params, metrics = run.data.params, run.data.metrics
    assert run.info.status == "FINISHED"
    assert (params["problem"], params["objective"]) == (problem, objective)
    assert ("problem_f" in params) == (problem == "expr")
    errors = Report(0, 0.0, metrics["val_value_mse"], metrics["val_deriv_mse"])
    expected = get(objective).minimised(errors, settings.objective.deriv_weight)
    assert metrics["objective_value"] == pytest.approx(expected, rel=1e-9)
    history = client.get_metric_history(outcome.run_id, "loss")
    losses = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert artifact_paths(client, outcome.run_id) >= RUN_PLOTS


# --- a sweep on a non-log problem -----------------------------------------------------------

SWEEP_TRIALS, SWEEP_EPOCHS = 3, 300
EXPR = "sin(3*x)*exp(-x)"


@pytest.fixture(scope="module")
def expr_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Stores, str]:
    root = tmp_path_factory.mktemp("expr-sweep")
    overrides = ["problem=expr", f'problem.f="{EXPR}"', "data.x_min=0", "data.x_max=3"]
    overrides += ["objective=sobolev", "objective.deriv_weight=0.1", "data.n_colloc=64"]
    overrides += [f"study.n_trials={SWEEP_TRIALS}", f"train.epochs={SWEEP_EPOCHS}"]
    overrides += ["study.report_every=100", "search.activation=[sigmoid]", "search.optimizer=[sgd]"]
    overrides += ["search.n_layers.low=2", "search.n_layers.high=2"]  # holds the post's network
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert run_sweep_in(root, overrides, log_model=False) == 0
    return Stores(root), output.getvalue()


def test_a_non_log_sweep_nests_its_trials_like_a_log_sweep(expr_sweep: tuple[Stores, str]) -> None:
    stores, _ = expr_sweep
    (parent,) = stores.parents()
    name = parent.data.tags[STUDY_TAG]
    assert name.startswith("expr-") and name.endswith("-sobolev")
    assert parent.data.tags["pipeline.objective"] == "sobolev"
    assert parent.data.params["problem"] == "expr" and parent.data.params["problem_f"] == EXPR
    assert parent.data.params["deriv_weight"] == "0.1"
    assert parent.info.status == "FINISHED"
    study = stores.study(name)
    children = stores.children(parent.info.run_id)
    assert len(children) == len(study.trials) == SWEEP_TRIALS
    assert study.trials[0].user_attrs.get(BASELINE_ATTR) is True
    for run in children:
        trial = trial_of(study, run)
        params, metrics = run.data.params, run.data.metrics
        assert run.data.tags[ROLE_TAG] == "trial"
        assert run.data.tags[STATE_TAG] == trial.state.name
        assert (params["problem"], params["problem_f"], params["objective"]) == (
            "expr",
            EXPR,
            "sobolev",
        )
        expected = metrics["val_value_mse"] + 0.1 * metrics["val_deriv_mse"]
        assert metrics["objective_value"] == pytest.approx(expected, rel=1e-9)
        if trial.value is not None:
            assert trial.value == pytest.approx(expected, rel=1e-9)
        assert artifact_paths(stores.client, run.info.run_id) >= RUN_PLOTS


def test_the_summary_prints_the_reference_line(expr_sweep: tuple[Stores, str]) -> None:
    stores, output = expr_sweep
    (parent,) = stores.parents()
    reference = parent.data.metrics["reference_value"]
    assert reference > 0 and reference != parent.data.metrics["baseline_value"]
    line = next(line for line in output.splitlines() if "reference" in line)
    assert f"reference {reference:.3e}" in line and "post's way" in line
