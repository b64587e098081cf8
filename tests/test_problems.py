"""Problems beyond log x: f and f' from YAML or SymPy, their checks, and the data they give.

Config-level and NumPy-level tests (no TensorFlow); `test_problem_runs.py` trains them.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig

from pipeline.config_values import CONF_DIR
from pipeline.core.data import make_dataset
from pipeline.core.expressions import derive
from pipeline.core.problem_config import read_problem, shipped
from pipeline.core.problems import Problem
from pipeline.defaults import load
from pipeline.settings import ConfigError

DATA = load("train").data  # the shipped data settings (conf/data/default.yaml)
REPO_ROOT = Path(__file__).resolve().parents[1]
# Problems with a target f (an equation's problems: tests/test_equations.py).
SHIPPED = sorted(
    p.stem
    for p in (CONF_DIR / "problem").glob("*.yaml")
    if p.stem != "expr" and "equation:" not in p.read_text()
)
EXPRESSIONS = ["sin(3*x)*exp(-x)", "x**3 - 2*x", "log(1 + exp(20*x))/20", "atan(5*x) + sqrt(x + 3)"]
ComposeFn = Callable[..., DictConfig]


def _domain(compose_cfg: ComposeFn, problem: str) -> tuple[float, float, float]:
    cfg = compose_cfg("train", [f"problem={problem}", "objective=derivative"])
    return cfg.data.x_min, cfg.data.x_max, cfg.objective.anchor_x


def _expr(f: str) -> Problem:
    return read_problem({"name": "expr", "f": f})


def _numerical_derivative(problem: Problem, x: np.ndarray) -> np.ndarray:
    h = 1e-6 * np.maximum(1.0, np.abs(x))
    return (problem.f(x + h) - problem.f(x - h)) / (2 * h)


def test_shipped_problems_are_at_least_log_and_three_others() -> None:
    assert "log" in SHIPPED and len(SHIPPED) >= 4


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_f_prime_is_the_numerical_derivative_of_f(
    compose_cfg: ComposeFn, name: str
) -> None:
    x_min, x_max, anchor = _domain(compose_cfg, name)
    problem = shipped(name)
    margin = 1e-3 * (x_max - x_min)  # central differences stay inside the domain
    x = np.linspace(x_min + margin, x_max - margin, 501)
    np.testing.assert_allclose(
        problem.df(x), _numerical_derivative(problem, x), rtol=1e-6, atol=1e-6
    )
    assert x_min <= anchor <= x_max  # each problem's own anchor lies in its own domain
    problem.check(x_min, x_max, anchor)


@pytest.mark.parametrize("f", EXPRESSIONS)
def test_expr_f_prime_from_sympy_is_the_numerical_derivative(f: str) -> None:
    problem = _expr(f)
    x = np.linspace(-0.9, 2.9, 401)
    np.testing.assert_allclose(
        problem.df(x), _numerical_derivative(problem, x), rtol=1e-6, atol=1e-6
    )
    assert problem.name == "expr" and problem.expression == f


def test_sympy_derivative_of_log_matches_the_hand_written_log_problem() -> None:
    log, derived = shipped("log"), _expr("log(x)")
    x = np.linspace(0.1, 1.9, 1001)
    np.testing.assert_allclose(derived.df(x), log.df(x), rtol=1e-15)
    np.testing.assert_array_equal(derived.f(x), log.f(x))
    np.testing.assert_array_equal(log.df(x), 1.0 / x)
    assert (log.f_text, log.df_text, log.label) == ("log x", "1/x", "log x")
    assert derive("log(x)") == "1/x"


def test_a_problem_pickles_as_text_and_evaluates_after() -> None:
    problem = _expr("sin(3*x)*exp(-x)")
    again = pickle.loads(pickle.dumps(problem))
    assert again == problem and len(pickle.dumps(problem)) < 1000  # strings, no callables
    x = np.array([0.5, 1.5])
    np.testing.assert_array_equal(again.f(x), np.sin(3 * x) * np.exp(-x))


def test_a_constant_derivative_is_an_array_of_the_points_shape() -> None:
    problem = _expr("2*x + 1")
    assert problem.derivative == "2"
    np.testing.assert_array_equal(problem.df(np.ones((5, 1))), np.full((5, 1), 2.0))


# --- bad problems: (problem, expression, domain, anchor) -> the key the error names ----------

BAD = [
    ({"name": "expr", "f": "sin(3*x"}, "problem.f", "does not parse"),
    ({"name": "expr", "f": "a*x"}, "problem.f", "only the symbol x"),
    ({"name": "expr", "f": "f(x)"}, "problem.f", "only the symbol x"),
    ({"name": "expr", "f": "__import__('os').getcwd()"}, "problem.f", "closed-form"),
    ({"name": "expr", "f": None}, "problem.f", "needs f in x"),
    ({"name": "log", "f": "x**2", "df": "1/x"}, "problem.f", "not the derivative"),
]


@pytest.mark.parametrize(("section", "key", "why"), BAD)
def test_a_bad_expression_names_its_key_and_the_problem(section: dict, key: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_dataset(DATA, read_problem(section), 1.0)
    assert caught.value.key == key
    assert f"problem={section['name']}" in str(caught.value) and why in str(caught.value)


@pytest.mark.parametrize("f", ["open('made-by-f', 'w')", "print(x)", "exec('x = 1')"])
def test_an_expression_runs_no_python(tmp_path: Path, monkeypatch, f: str, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        read_problem({"name": "expr", "f": f})
    assert caught.value.key == "problem.f"
    assert not list(tmp_path.iterdir()) and not capsys.readouterr().out


@pytest.mark.parametrize(
    ("f", "domain", "anchor", "key", "where"),
    [
        ("1/(x-1)", (0.1, 1.9), 0.5, "problem.f", "x=1"),  # a pole inside: grids may step over it
        ("tan(x)", (0.0, 3.0), 1.0, "problem.f", "x=1.5708"),
        ("sqrt(x - 0.5)", (0.5, 1.9), 1.0, "data.x_min", "x=0.5"),  # f' infinite at the edge
        ("log(2 - x)", (0.1, 2.0), 1.0, "data.x_max", "x=2"),
        ("log(x)", (0.1, 1.9), -1.0, "objective.anchor_x", "anchor"),
    ],
)
def test_not_finite_on_the_domain_names_the_key(
    f: str, domain: tuple[float, float], anchor: float, key: str, where: str
) -> None:
    cfg = replace(DATA, x_min=domain[0], x_max=domain[1])
    with pytest.raises(ConfigError) as caught:
        make_dataset(cfg, _expr(f), anchor)
    assert caught.value.key == key and where in str(caught.value)
    assert "problem=expr" in str(caught.value)


def _train_cli(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "pipeline.train", *overrides]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (['problem.f="sin(3*x"'], "problem.f"),
        (['problem.f="exp(-y*x)"'], "problem.f"),
        (
            [
                'problem.f="1/(x-1)"',
                "data.x_min=0.1",
                "objective=derivative",
                "objective.anchor_x=0.5",
            ],
            "problem.f",
        ),
        ([], "problem.f"),
    ],
)
def test_bad_expression_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, overrides: list[str], key: str
) -> None:
    done = _train_cli(tmp_path, "problem=expr", *overrides)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert re.fullmatch(rf"error: {re.escape(key)}=\S.*: problem=expr: .+", lines[0]), lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert not list(tmp_path.iterdir()), "nothing may be written"


# --- the data a problem gives -------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_dataset_holds_the_problems_targets_on_its_grids(compose_cfg: ComposeFn, name: str) -> None:
    x_min, x_max, anchor = _domain(compose_cfg, name)
    cfg = replace(DATA, x_min=x_min, x_max=x_max)
    data, problem = make_dataset(cfg, shipped(name), anchor), shipped(name)
    assert len(data.x_train) == cfg.n_train and len(data.x_colloc) == cfg.n_colloc
    for x, y, dy in [
        (data.x_train, data.y_train, data.dy_train),
        (data.x_colloc, data.y_colloc, data.dy_colloc),
        (data.x_val, data.y_val, data.dy_val),
    ]:
        assert x.shape == y.shape == dy.shape == (len(x), 1) and x.dtype == np.float32
        np.testing.assert_allclose(y, problem.f(x.astype(np.float64)), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(dy, problem.df(x.astype(np.float64)), rtol=1e-6, atol=1e-7)
        assert x.min() >= np.float32(x_min) and x.max() <= np.float32(x_max)
    trained = np.concatenate([data.x_train, data.x_colloc]).ravel()
    assert np.abs(data.x_val - trained[None, :]).min() > 1e-6 * (x_max - x_min)
    assert (data.anchor_x, data.anchor_y) == (anchor, pytest.approx(problem.f(np.array(anchor))))


# --- the config group ----------------------------------------------------------------------


@pytest.mark.parametrize("config_name", ["train", "sweep"])
def test_a_problem_sets_its_domain_and_the_command_line_still_wins(
    compose_cfg: ComposeFn, config_name: str
) -> None:
    sin = compose_cfg(config_name, ["problem=sin"])
    assert (sin.data.x_min, sin.data.x_max) == (0.0, pytest.approx(np.pi))
    assert sin.objective.anchor_x == 0.0
    mine = compose_cfg(config_name, ["problem=sin", "data.x_max=2.0", "objective.anchor_x=0.5"])
    assert (mine.data.x_min, mine.data.x_max, mine.objective.anchor_x) == (0.0, 2.0, 0.5)
    first = compose_cfg(config_name, ["data.x_max=2.0", "problem=exp"])  # order does not matter
    assert (first.data.x_min, first.data.x_max) == (-2.0, 2.0)
    log = compose_cfg(config_name)
    assert (log.problem.name, log.data.x_min, log.data.x_max) == ("log", 0.1, 1.9)


@pytest.mark.parametrize(
    ("overrides", "study"),
    [
        ([], "log-{objective}"),
        (["problem=runge"], "runge-{objective}"),
        (["problem=expr", 'problem.f="sin(3*x)*exp(-x)"'], "expr-6b5ed6-{objective}"),
        (["problem=expr", 'problem.f="x**2"'], "expr-6a1034-{objective}"),
        (["problem=sin", "study.name=mine"], "mine"),
    ],
)
def test_study_names_default_to_problem_and_objective(overrides: list[str], study: str) -> None:
    from sweeping import settings_for

    from pipeline.sweeping.study import study_name

    settings = settings_for(overrides)
    assert settings.study.name == study
    if "{objective}" in study:
        assert study_name(settings.study.name, "value", 2) == study.replace("{objective}", "value")


def test_sobolev_is_an_objective_of_both_entry_points(compose_cfg: ComposeFn) -> None:
    from pipeline.train import read_settings

    settings = read_settings(compose_cfg("train", ["objective=sobolev", "problem=exp"]))
    assert (settings.objective.name, settings.objective.deriv_weight) == ("sobolev", 1.0)
    from sweeping import settings_for

    sweep = settings_for(["objective=sobolev", "objective.deriv_weight=0.1"])
    assert [(o.name, o.deriv_weight) for o in sweep.objectives] == [("sobolev", 0.1)]
    assert [o.name for o in settings_for([]).objectives] == ["value", "derivative"]
