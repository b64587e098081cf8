"""An equation's exact solution: checked against the equation and its conditions on a grid, or
found by SymPy's `dsolve` with the conditions, in a child process bounded in time.

The exact solution only feeds reported metrics (`val_value_mse`, `val_l2re`); a study never
sees it. TensorFlow-free.
"""

from __future__ import annotations

import functools
import multiprocessing
from typing import Any

import numpy as np

from pipeline.config_values import ConfigError
from pipeline.core.equations import (
    SOLUTION_KEY,
    condition,
    derivative_symbols,
    ode,
    parse_residual,
    unknown_y,
)
from pipeline.core.expressions import parse, x_symbol
from pipeline.core.specs import EquationSpec

DSOLVE_SECONDS = 10.0  # how long SymPy's dsolve may look for an exact solution
CHECK_POINTS = 257  # the grid on which a solution must satisfy the equation
TOLERANCE = 1e-6  # relative to the size of the terms


def derivatives_of(solution: str, order: int) -> list[Any]:
    """The SymPy derivatives 0..order of the closed form `solution` in x."""
    import sympy

    f = parse(solution)
    return [sympy.diff(f, x_symbol(), k) for k in range(order + 1)]


def solution_errors(equation: EquationSpec, solution: str, x: np.ndarray) -> tuple[float, float]:
    """Largest |residual| of `solution` on the points x and largest |condition error|, each
    relative to the size of the terms (1 + the largest |y^(k)| there)."""
    import sympy

    ds = derivatives_of(solution, equation.order)
    names = [x_symbol(), *derivative_symbols(equation.order)]
    residual = parse_residual(equation.residual, equation.order)
    table = dict(zip(names[1:], ds, strict=True))
    values = sympy.lambdify(names[:1], [residual.xreplace(table), *ds], modules="numpy")
    with np.errstate(all="ignore"):
        out = [np.broadcast_to(np.asarray(v, np.float64), x.shape) for v in values(x)]
        scale = 1.0 + max(float(np.max(np.abs(v))) for v in out[1:])
        at = sympy.lambdify(names[:1], ds, modules="numpy")
        cond = [
            abs(
                sum(c * float(v) for c, v in zip(cs.coefficients, at(cs.x0), strict=False))
                + cs.constant
            )
            for cs in equation.conditions
        ]
    return float(np.max(np.abs(out[0]))) / scale, max(cond, default=0.0) / scale


def check_solution(equation: EquationSpec, solution: str, x_min: float, x_max: float) -> None:
    """ConfigError unless `solution` satisfies the equation on a grid of [x_min, x_max] and
    every condition, to TOLERANCE relative to its terms."""
    grid = np.linspace(x_min, x_max, CHECK_POINTS)
    residual, conditions = solution_errors(equation, solution, grid)
    if not np.isfinite(residual) or residual > TOLERANCE:
        raise ConfigError(
            SOLUTION_KEY,
            solution,
            f"does not satisfy the equation on "
            f"[data.x_min, data.x_max] (residual up to {residual:.2g} of its terms)",
        )
    if not np.isfinite(conditions) or conditions > TOLERANCE:
        raise ConfigError(
            SOLUTION_KEY,
            solution,
            f"does not satisfy the conditions (error up to {conditions:.2g} of its terms)",
        )


def _dsolve(equation: str, conditions: tuple[str, ...], out: Any) -> None:
    """In a child process: SymPy's solution of the problem as text, or "" (none found)."""
    import sympy

    try:
        expr, order = ode(equation)
        general = sympy.dsolve(expr, unknown_y())
        general = general if isinstance(general, sympy.Eq) else general[0]
        f = general.rhs
        if f.has(unknown_y()):
            out.put("")
            return
        x, constants = x_symbol(), sorted(f.free_symbols - {x_symbol()}, key=str)
        equations = []
        for text in conditions:
            c = condition(text, order)
            value = sum(k * sympy.diff(f, x, i).subs(x, c.x0) for i, k in enumerate(c.coefficients))
            equations.append(value + c.constant)
        if constants:
            found = sympy.solve(equations, constants, dict=True)
            f = f.subs(found[0]) if found else None
        if f is None or f.free_symbols - {x}:
            out.put("")
            return
        out.put(str(sympy.nsimplify(sympy.simplify(f), [sympy.pi], rational=False)))
    except Exception:  # any failure of SymPy's: no exact solution
        out.put("")


@functools.cache
def solve(equation: str, conditions: tuple[str, ...]) -> str | None:
    """An exact solution from SymPy's `dsolve` with the conditions, found within DSOLVE_SECONDS
    in a child process (killed after), or None."""
    import queue

    context = multiprocessing.get_context(
        "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    )
    out = context.Queue()
    child = context.Process(target=_dsolve, args=(equation, conditions, out), daemon=True)
    child.start()
    try:
        text = out.get(timeout=DSOLVE_SECONDS)
    except queue.Empty:
        text = ""
    child.join(1.0)
    if child.is_alive():
        child.kill()
        child.join()
    return text or None
