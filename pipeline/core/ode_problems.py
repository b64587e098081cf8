"""An equation's problem (`problem=ode`, `logistic`, `oscillator`, ...): read and checked.

The problem's f is the exact solution, used only for reported metrics: `problem.solution` where
given (checked against the equation and conditions on a grid), else SymPy's `dsolve` where it
finds one in time, else none (the runs then report no exact-solution metrics, said once).
TensorFlow-free.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.config_values import ConfigError
from pipeline.core import equations, exact
from pipeline.core.expressions import derive, parse, short
from pipeline.core.problems import CHECK_POINTS, NO_SOLUTION, Problem
from pipeline.core.specs import EquationSpec

EXAMPLE = '\'problem.equation="y_xx + y = 0"\' \'problem.conditions=["y(0) = 0","y_x(0) = 1"]\''
_SAID: set[tuple[str, tuple[str, ...]]] = set()  # equations whose missing solution was noted


def _equation(section: Mapping[str, Any], name: str) -> str:
    value = section.get("equation")
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            equations.EQUATION_KEY,
            value,
            f"problem={name}: needs an equation in y of x, e.g. {EXAMPLE}",
        )
    return value.strip()


def _conditions(section: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = section.get("conditions")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(
        isinstance(c, str) and c.strip() for c in value
    ):
        raise ConfigError(
            equations.CONDITIONS_KEY,
            value,
            f"problem={name}: must be a list of point conditions, "
            'e.g. \'problem.conditions=["y(0) = 0","y_x(0) = 1"]\'',
        )
    return tuple(c.strip() for c in value)


def _solution(section: Mapping[str, Any], equation: str, conditions: tuple[str, ...]) -> str | None:
    value = section.get("solution")
    if value is None:
        found = exact.solve(equation, conditions)
        if found is None and (equation, conditions) not in _SAID:
            _SAID.add((equation, conditions))
            print(
                f"note: {equation}: no exact solution (no problem.solution, and SymPy's dsolve "
                f"found none in {exact.DSOLVE_SECONDS:g} s): runs report val_residual_mse, "
                "no val_value_mse or val_l2re",
                file=sys.stderr,
            )
        return found
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(equations.SOLUTION_KEY, value, "must be a closed form in x, or null")
    try:
        parse(value)
    except ValueError as error:
        raise ConfigError(equations.SOLUTION_KEY, value, str(error)) from None
    return value.strip()


@dataclass(frozen=True)
class EquationProblem(Problem):
    """An equation's problem: its equation and conditions, f its exact solution where known."""

    @property
    def spec(self) -> EquationSpec:
        """The equation as the trainer's residual graph takes it (checked when read)."""
        return equations.spec(self.equation, self.conditions)

    def check(
        self, x_min: float, x_max: float, anchor_x: float, points: np.ndarray | None = None
    ) -> None:
        """ConfigError unless the conditions, the residual and a known solution hold on
        [x_min, x_max] (`check`); an equation has no anchor, so `anchor_x` is not used."""
        check(self, x_min, x_max, points)


def read_ode(section: Mapping[str, Any], name: str) -> EquationProblem:
    """The checked equation, conditions and exact solution (raises ConfigError naming the key);
    the domain's checks follow in `check`."""
    equation, conditions = _equation(section, name), _conditions(section, name)
    equations.spec(equation, conditions)  # parses, orders, counts: ConfigError if not
    solution = _solution(section, equation, conditions)
    f = solution or NO_SOLUTION
    df = derive(solution) if solution else NO_SOLUTION
    text = section.get("label") or equation
    return EquationProblem(
        name=name,
        label=short(str(text)),
        expression=f,
        derivative=df,
        f_text=short(
            str(section.get("f_text") or (f"exact {solution}" if solution else "exact y"))
        ),
        df_text=short(
            str(section.get("df_text") or (f"exact y' = {df}" if solution else "exact y'"))
        ),
        equation=equation,
        conditions=conditions,
    )


def check(
    problem: EquationProblem, x_min: float, x_max: float, points: np.ndarray | None = None
) -> None:
    """ConfigError unless every condition's point lies in [x_min, x_max], the residual is
    finite there, and a known solution is finite there and satisfies equation and conditions."""
    spec = problem.spec
    equations.check_conditions(spec, problem.conditions, x_min, x_max)
    grid = np.linspace(x_min, x_max, CHECK_POINTS)
    if points is not None:
        grid = np.concatenate([grid, np.ravel(points)])
    equations.check_residual(spec, problem.equation, grid)
    if not problem.known:
        return
    with np.errstate(all="ignore"):
        finite = np.isfinite(problem.f(grid)) & np.isfinite(problem.df(grid))
    if not finite.all():
        where = float(grid[~finite].min())
        raise ConfigError(
            equations.SOLUTION_KEY,
            problem.expression,
            f"must be finite on [data.x_min, data.x_max]; not at x={where:.6g}",
        )
    exact.check_solution(spec, problem.expression, x_min, x_max)


def check_objective(problem: Problem, objective: Any) -> None:
    """ConfigError unless the objective (the name as given) can train the problem: an equation
    only the residual objective (its default), a target any other."""
    residual = objective == "residual"
    if problem.equation is not None and not residual:
        raise ConfigError(
            "objective",
            objective,
            f"problem={problem.name} is an equation with no "
            "target f to fit: only objective=residual trains it (its default)",
        )
    if problem.equation is None and residual:
        raise ConfigError(
            "objective",
            objective,
            f"problem={problem.name} has no equation: "
            "objective=residual needs one (problem=ode, logistic, oscillator, ...)",
        )
