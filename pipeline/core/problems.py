"""The problem a run solves: a target f with its derivative f' (`core.problem_config` reads it).

A problem is a few strings (f and f' in SymPy syntax, a label, legend texts), so it pickles to
spawned workers and recorders as-is; the NumPy callables are built from the strings on first use
and cached per process. `problem=expr` takes any closed form `problem.f` in x and derives f'
symbolically. TensorFlow-free; SymPy is imported only when an expression is first evaluated.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.config_values import ConfigError
from pipeline.core.expressions import derive, evaluate, first_gap, parse, short

EXPR = "expr"  # the problem whose f the user types (`problem.f`)
ODE = "ode"  # the problem whose equation the user types (`problem.equation`)
NO_SOLUTION = "nan"  # f of an equation whose exact solution is not known
CHECK_POINTS = 4097  # the dense grid on which f and f' must be finite


@dataclass(frozen=True)
class Problem:
    """One target: f (value fits, validation) and f' (derivative fits, validation) in x."""

    name: str
    label: str  # short, for titles: "log x"
    expression: str  # f, SymPy syntax: "log(x)"
    derivative: str  # f', SymPy syntax: "1/x"
    f_text: str  # legend of the f curve: "log x"
    df_text: str  # legend of the f' curve: "1/x"
    # An equation's problem (`pipeline.core.ode_problems`): f is its exact solution (NO_SOLUTION
    # where none is known), the equation and its conditions as typed.
    equation: str | None = None
    conditions: tuple[str, ...] = ()

    @property
    def known(self) -> bool:
        """Whether f is known (an equation's exact solution may not be)."""
        return self.expression != NO_SOLUTION

    def f(self, x: np.ndarray) -> np.ndarray:
        """f at every entry of x (float64, the shape of x)."""
        return evaluate(self.expression, x)

    def df(self, x: np.ndarray) -> np.ndarray:
        """f' at every entry of x (float64, the shape of x)."""
        return evaluate(self.derivative, x)

    @property
    def study_key(self) -> str:
        """The study names' `{problem}`: the name, or for `expr` one per expression."""
        if self.name not in (EXPR, ODE):
            return self.name
        typed = self.expression if self.name == EXPR else repr((self.equation, self.conditions))
        return f"{self.name}-{hashlib.sha1(typed.encode()).hexdigest()[:6]}"

    def check(
        self, x_min: float, x_max: float, anchor_x: float, points: np.ndarray | None = None
    ) -> None:
        """ConfigError unless f and f' are finite at the anchor x0 and on [x_min, x_max]:
        symbolically (SymPy's continuous domain, where it can tell) and at the points of a dense
        grid plus `points` (those a run uses); and a hand-written f' must be f's derivative.
        An equation's problem has checks of its own (`ode_problems.EquationProblem`)."""
        if not _finite(self, np.array([anchor_x])).all():
            raise self._not_finite("objective.anchor_x", anchor_x, "at the anchor x0")
        grid = np.linspace(x_min, x_max, CHECK_POINTS)
        if points is not None:
            grid = np.concatenate([grid, np.ravel(points)])
        bad = grid[~_finite(self, grid)]
        f, df = self.expression, self.derivative
        first = float(bad.min()) if bad.size else first_gap(f, df, x_min, x_max)
        if first is None:
            self._check_derivative(grid)
            return
        where = f"on [data.x_min, data.x_max]; not at x={first:.6g}"
        if first <= x_min:
            raise self._not_finite("data.x_min", x_min, where)
        if first >= x_max:
            raise self._not_finite("data.x_max", x_max, where)
        if self.name == EXPR:
            raise self._not_finite("problem.f", self.expression, where)
        raise self._not_finite("data.x_min", x_min, where)

    def _check_derivative(self, grid: np.ndarray) -> None:
        """A hand-written f' (shipped problems) must be SymPy's derivative of f on the domain:
        this also catches `problem.f` overridden on a shipped problem."""
        derived = derive(self.expression)
        if self.derivative == derived:
            return
        ours, exact = self.df(grid), evaluate(derived, grid)
        scale = float(np.max(np.abs(exact), initial=1.0))
        if not np.allclose(ours, exact, rtol=1e-7, atol=1e-9 * scale):
            raise ConfigError(
                "problem.f",
                self.expression,
                f"problem={self.name}: its f' = {self.derivative} is not the derivative of "
                "this f; for a target of your own use problem=expr",
            )

    def _not_finite(self, key: str, value: Any, where: str) -> ConfigError:
        what = f"f = {self.f_text} and f' = {self.df_text} must be finite (and real) {where}"
        return ConfigError(key, value, f"problem={self.name}: {what}")


def _finite(problem: Problem, x: np.ndarray) -> np.ndarray:
    return np.isfinite(problem.f(x)) & np.isfinite(problem.df(x))


def _text(section: Mapping[str, Any], key: str, default: str) -> str:
    value = section.get(key)
    if value is None:
        return default
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"problem.{key}", value, "must be a non-empty text")
    return value


def _formula(section: Mapping[str, Any], key: str, name: str) -> str:
    value = section.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        example = "'problem.f=\"sin(3*x)*exp(-x)\"'"
        raise ConfigError(f"problem.{key}", value, f"problem={name}: needs f in x, e.g. {example}")
    try:
        parse(value)
    except ValueError as error:
        raise ConfigError(f"problem.{key}", value, f"problem={name}: {error}") from None
    return value.strip()


def read_target(section: Mapping[str, Any], name: str) -> Problem:
    """The checked target f of problem `name` (raises ConfigError naming the key).

    Shipped problems give f' by hand (`problem.df`; `Problem.check` holds it to SymPy's
    derivative of f on the domain); `expr` derives f' with SymPy.
    """
    f = _formula(section, "f", name)
    df = derive(f) if section.get("df") is None else _formula(section, "df", name)
    return Problem(
        name=name,
        label=short(_text(section, "label", f)),
        expression=f,
        derivative=df,
        f_text=short(_text(section, "f_text", f)),
        df_text=short(_text(section, "df_text", df)),
    )
