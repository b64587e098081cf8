"""Equations from config (`problem=ode` and the shipped equations) and the residual objective.

The post's problem is one of them: y' = 1/x, y(1) = 0 as an equation trains the same loss as
`problem=log objective=derivative`. Derivatives of every order come from nested tapes; bad
equations, conditions and solutions stop with one line naming the key.
"""

from __future__ import annotations

import numpy as np
import pytest
import sweeps
from test_bad_input import assert_one_error_line

from pipeline.config_values import ConfigError
from pipeline.core import equations, exact
from pipeline.defaults import load

OSCILLATOR = ['problem.equation="y_xx + y = 0"', 'problem.conditions=["y(0) = 0","y_x(0) = 1"]']
LOG_ODE = ['problem.equation="y_x = 1/x"', 'problem.conditions=["y(1) = 0"]']
SHIPPED = ["logistic", "oscillator", "poisson", "gauss"]


def test_the_issues_example_selects_the_residual_objective_and_solves_with_sympy() -> None:
    s = load("sweep", ["problem=ode", *OSCILLATOR, "data.x_min=0", "data.x_max=6.283"])
    assert [o.name for o in s.objectives] == ["residual"]
    assert s.problem.expression == "sin(x)"  # SymPy's dsolve with the conditions
    assert s.problem.spec.order == 2 and len(s.problem.spec.conditions) == 2
    assert s.study.name.startswith("ode-")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_equations_read_with_their_exact_solution_checked(name: str) -> None:
    s = load("train", [f"problem={name}"])
    assert s.objective.name == "residual" and s.problem.known
    x = np.linspace(s.data.x_min, s.data.x_max, 101)
    residual, conditions = exact.solution_errors(s.problem.spec, s.problem.expression, x)
    assert residual < 1e-9 and conditions < 1e-9


def test_equation_notation_subscripts_diff_and_conditions() -> None:
    assert equations.residual_text("diff(y, x, 2) + y = 0") == equations.residual_text("y_xx + y")
    assert equations.residual_text("y_x = y*(1 - y)")[1] == 1
    robin = equations.condition("y(1) + y_x(1) = 2", 2)
    assert (robin.x0, robin.coefficients, robin.constant) == (1.0, (1.0, 1.0), -2.0)


def _train_log(overrides: list[str], objective: str, epochs: int = 400):
    from pipeline.core.data import make_dataset
    from pipeline.core.model import seeded_weights
    from pipeline.core.specs import CONSTANT_RATE
    from pipeline.core.trainer import TrainSpec, train

    s = load("train", overrides)
    o = s.objective
    data = make_dataset(s.data, s.problem, o.anchor_x, 0)
    spec = TrainSpec("sigmoid", "sgd", 0.1, epochs, CONSTANT_RATE, objective, o.anchor_weight,
                     o.deriv_weight, 50, 200, condition_weight=o.condition_weight)  # fmt: skip
    return train(spec, seeded_weights((10, 10), 0), data)


def test_the_posts_problem_as_an_equation_trains_the_same_loss() -> None:
    target = _train_log(["problem=log", "objective=derivative"], "derivative")
    domain = ["data.x_min=0.1", "data.x_max=1.9"]
    equation = _train_log(["problem=ode", *LOG_ODE, *domain], "residual")
    assert equation.history_loss[0] > 1e-3  # a loss that moves, not a trivial one
    np.testing.assert_allclose(equation.history_loss, target.history_loss, rtol=1e-4)
    np.testing.assert_allclose(equation.val_f, target.val_f, rtol=1e-4, atol=1e-6)
    assert equation.val_value_mse == pytest.approx(target.val_value_mse, rel=1e-3)
    # The residual is f' - 1/x and the condition f(1): the derivative run's own two terms.
    assert equation.val_residual_mse == pytest.approx(target.val_deriv_mse, rel=1e-3)


def test_nested_tapes_give_every_order_of_derivative() -> None:
    import tensorflow as tf

    from pipeline.core.layout import Layout, pack
    from pipeline.core.model import seeded_weights
    from pipeline.core.residual import derivatives

    layout = Layout.exact([8, 8], "tanh", "adam")
    packed = pack(layout, seeded_weights((8, 8), 3), "tanh")
    weights = [tf.constant(w[None]) for w in packed.weights]
    masks = [tf.constant(m[None]) for m in packed.masks]
    net = (masks, tf.constant(packed.active[None]), tf.constant([packed.activation]))
    x = np.linspace(-1.0, 1.0, 7)
    h = 1e-2
    shifted = np.concatenate([x + k * h for k in (-2, -1, 0, 1, 2)]).astype(np.float32)
    ds = derivatives(weights, net, tf.constant(shifted[None, :, None]), layout.activations, 4)
    y = ds[0].numpy().reshape(5, -1).astype(np.float64)
    exact = [d.numpy().reshape(5, -1)[2] for d in ds]
    # Central differences of y itself, to about h^2 (float32 limits the highest order most).
    np.testing.assert_allclose(exact[1], (y[3] - y[1]) / (2 * h), atol=2e-3)
    np.testing.assert_allclose(exact[2], (y[3] - 2 * y[2] + y[1]) / h**2, atol=5e-2)
    # Higher orders against differences of the tape's lower derivatives (float32-safe).
    for k in (3, 4):
        lower = ds[k - 1].numpy().reshape(5, -1)
        np.testing.assert_allclose(exact[k], (lower[3] - lower[1]) / (2 * h), rtol=2e-2, atol=2e-2)


BAD = [
    (['problem.equation="y_x = ("'], "problem.equation"),
    (['problem.equation="y_x = z*y"'], "problem.equation"),
    (['problem.equation="y = sin(x)"'], "problem.equation"),
    (['problem.equation="y_xxxxx = y"'], "problem.equation"),
    (['problem.equation="diff(y, x, 5) = y"'], "problem.equation"),
    (['problem.conditions=["y(x) = 0","y_x(0) = 1"]'], "problem.conditions"),
    (['problem.conditions=["y(0)*y_x(0) = 1","y_x(0) = 1"]'], "problem.conditions"),
    (['problem.conditions=["y(9) = 0","y_x(0) = 1"]'], "problem.conditions"),
    (['problem.conditions=["y(0) = 0"]'], "problem.conditions"),
    (['problem.solution="cos(x)"'], "problem.solution"),  # misses y(0) = 0
    (['problem.solution="sin(2*x)"'], "problem.solution"),  # misses the equation
    (['problem.equation="y_xx + y/(x-1) = 0"'], "problem.equation"),  # a pole inside
    (["objective=value"], "objective"),
]


@pytest.mark.parametrize(("overrides", "key"), BAD, ids=[" ".join(c[0]) for c in BAD])
def test_bad_equations_name_their_key(overrides: list[str], key: str) -> None:
    base = ["problem=ode", *OSCILLATOR, "data.x_min=0", "data.x_max=6.283"]
    with pytest.raises(ConfigError) as caught:
        load("sweep", [*base, *overrides])
    assert caught.value.key == key, str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_residual_objective_without_an_equation_is_refused() -> None:
    with pytest.raises(ConfigError, match="objective=residual needs one"):
        load("train", ["objective=residual"])


BASE = ["problem=ode", *OSCILLATOR, "data.x_min=0", "data.x_max=6.283"]


@pytest.mark.parametrize(
    ("overrides", "key"),
    [([*BASE, *c[0]], c[1]) for c in (BAD[0], BAD[7], BAD[9])]
    + [(["problem=log", "objective=residual"], "objective")],
    ids=["equation", "condition outside", "solution", "residual on log"],
)
def test_bad_equations_exit_2_with_one_line_and_write_nothing(tmp_path, overrides, key) -> None:
    result = sweeps.run_sweep(tmp_path, *overrides, timeout=60)
    assert_one_error_line(result, key)
    assert not list(tmp_path.iterdir()), "nothing may be created"


def test_without_an_exact_solution_a_run_reports_no_errors_against_one(monkeypatch, capsys):
    from pipeline.core.data import make_dataset
    from pipeline.settings import ObjectiveConfig
    from pipeline.tracking.recording import final_metrics

    monkeypatch.setattr(exact, "solve", lambda equation, conditions: None)  # dsolve finds none
    pendulum = ["problem=ode", 'problem.equation="y_xx = -sin(y)"', *OSCILLATOR[1:],
                "data.x_min=0", "data.x_max=3"]  # fmt: skip
    s = load("train", pendulum)
    assert not s.problem.known and "no exact solution" in capsys.readouterr().err
    result = _train_log(pendulum, "residual", epochs=20)
    data = make_dataset(s.data, s.problem, None, 0)
    metrics = final_metrics(ObjectiveConfig("residual", condition_weight=1.0), result, data)
    assert {"val_residual_mse", "condition_sse", "objective_value"} <= set(metrics)
    assert not {"val_value_mse", "val_deriv_mse", "val_l2re"} & set(metrics)
    assert metrics["objective_value"] == pytest.approx(
        result.val_residual_mse + result.condition_sse
    )
