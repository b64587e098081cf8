"""Differential equations in the unknown y of x, from config text, parsed and checked by SymPy.

`problem.equation` is `lhs = rhs` (or an expression equal to 0) in x, y and its derivatives,
written `y_x`, `y_xx`, `y_xxx`, `y_xxxx` or `diff(y, x, n)`; `problem.conditions` are point
conditions, linear combinations of y and its derivatives at one point (`y(1) + y_x(1) = 0`).
This module turns them into an `EquationSpec` (the residual as text in x, y, y_x, ...; the
conditions as coefficients), checks a given exact solution against both, and otherwise asks
SymPy's `dsolve` for one, in a child process bounded in time. TensorFlow-free.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.config_values import ConfigError
from pipeline.core.expressions import sympy_names, x_symbol
from pipeline.core.specs import DERIVATIVE_NAMES, MAX_ORDER, ConditionSpec, EquationSpec

_SUBSCRIPT = re.compile(r"\by_(x+)\b")
EQUATION_KEY, CONDITIONS_KEY, SOLUTION_KEY = (
    "problem.equation",
    "problem.conditions",
    "problem.solution",
)


def _sympy_names() -> dict[str, Any]:
    return {**sympy_names(), "__builtins__": {}}


def _sides(text: str) -> tuple[str, str]:
    """`lhs = rhs` split at its one `=`; an expression alone equals 0."""
    if "__" in text or ";" in text or "lambda" in text:  # parse_expr evaluates Python
        raise ValueError("does not parse")
    if "==" in text or text.count("=") > 1:
        raise ValueError("must be one `lhs = rhs` (a single =) or an expression equal to 0")
    lhs, _, rhs = text.partition("=")
    if not lhs.strip() or (_ and not rhs.strip()):
        raise ValueError("needs an expression on both sides of =")
    return lhs, rhs or "0"


def _parse(text: str, names: dict[str, Any]) -> Any:
    import sympy
    from sympy.parsing.sympy_parser import parse_expr, standard_transformations

    try:
        expr = parse_expr(
            text,
            local_dict=names,
            global_dict=_sympy_names(),
            transformations=standard_transformations,
        )
    except Exception as error:  # SyntaxError, TokenError, TypeError, ... from parse_expr
        raise ValueError(f"does not parse ({type(error).__name__})") from None
    if not isinstance(expr, sympy.Expr):
        raise ValueError("is not an expression")
    return expr


def unknown_y() -> Any:
    """The unknown y(x) as SymPy's applied function."""
    import sympy

    return sympy.Function("y")(x_symbol())


@functools.cache
def ode(text: str) -> tuple[Any, int]:
    """The equation `text` as SymPy's lhs - rhs in y(x) and its Derivatives, and its order
    (ValueError saying why not: parse, other symbols, no derivative, order above 4)."""
    import sympy
    from sympy.core.function import AppliedUndef

    longest = max((len(m) for m in _SUBSCRIPT.findall(text)), default=0)
    if longest > MAX_ORDER:
        raise ValueError(f"is of order {longest}; orders 1 to {MAX_ORDER} are supported")
    x, y = x_symbol(), unknown_y()
    names = {"x": x, **{n: sympy.diff(y, x, k) for k, n in enumerate(DERIVATIVE_NAMES)}}
    lhs, rhs = (_parse(side, names) for side in _sides(text))
    expr = lhs - rhs
    others = sorted(str(s) for s in expr.free_symbols - {x})
    unknown = sorted({str(f.func) for f in expr.atoms(AppliedUndef) if f != y})
    if others or unknown:
        raise ValueError(
            f"uses {', '.join(others + unknown)}; only x, y and its derivatives "
            "(y_x, y_xx, ... or diff(y, x, n)) are allowed"
        )
    orders = []
    for d in expr.atoms(sympy.Derivative):
        if d.expr != y or {v for v, _ in d.variable_count} != {x}:
            raise ValueError(f"has {d}; only derivatives of y in x are allowed")
        orders.append(int(d.derivative_count))
    if not orders:
        raise ValueError("has no derivative of y: write one as y_x, y_xx, ... or diff(y, x, n)")
    if max(orders) > MAX_ORDER:
        raise ValueError(f"is of order {max(orders)}; orders 1 to {MAX_ORDER} are supported")
    return expr, max(orders)


def derivative_symbols(order: int) -> list[Any]:
    """The symbols y, y_x, ... up to `order` that a residual's text reads."""
    import sympy

    return [sympy.Symbol(n, real=True) for n in DERIVATIVE_NAMES[: order + 1]]


@functools.cache
def residual_text(text: str) -> tuple[str, int]:
    """The residual of equation `text` as SymPy text in x, y, y_x, ... (the graph's form)."""
    import sympy

    expr, order = ode(text)
    y, x = unknown_y(), x_symbol()
    named = list(enumerate(derivative_symbols(order)))
    table = {sympy.diff(y, x, k): s for k, s in reversed(named)}
    return str(expr.xreplace(table)), order


def parse_residual(text: str, order: int) -> Any:
    """`residual_text`'s text back as a SymPy expression."""
    names = {"x": x_symbol(), **{str(s): s for s in derivative_symbols(order)}}
    return _parse(text, names)


@functools.cache
def condition(text: str, order: int) -> ConditionSpec:
    """A point condition `text` as coefficients of y, y_x, ... at one point x0 (ValueError
    saying why not: not a point condition, not linear, a derivative the order does not fix)."""
    import sympy
    from sympy.core.function import AppliedUndef

    functions = {n: sympy.Function(n) for n in DERIVATIVE_NAMES}
    lhs, rhs = (_parse(side, {"x": x_symbol(), **functions}) for side in _sides(text))
    expr = lhs - rhs
    calls = expr.atoms(AppliedUndef)
    if expr.free_symbols or not calls:
        raise ValueError("is not a point condition such as y(0) = 0 or y_x(1) + y(1) = 2")
    points, slots = set(), {}
    for call in calls:
        name = str(call.func)
        if name not in functions or len(call.args) != 1 or not call.args[0].is_number:
            raise ValueError(f"has {call}; a condition names y, y_x, ... at a number, e.g. y(0)")
        k = DERIVATIVE_NAMES.index(name)
        if k >= order:
            raise ValueError(
                f"names {name}; an equation of order {order} takes conditions on "
                f"{', '.join(DERIVATIVE_NAMES[:order])}"
            )
        points.add(float(call.args[0]))
        slots[call] = (k, sympy.Dummy())
    if len(points) != 1:
        raise ValueError("names more than one point; each condition is at one point")
    linear = expr.xreplace({call: s for call, (_, s) in slots.items()})
    coefficients = [0.0] * order
    for k, s in slots.values():
        c = sympy.diff(linear, s)
        if c.free_symbols:
            raise ValueError("is not linear in y and its derivatives at its point")
        coefficients[k] += float(c)
    constant = float(linear.subs({s: 0 for _, s in slots.values()}))
    return ConditionSpec(points.pop(), tuple(coefficients), constant)


def spec(equation: str, conditions: Sequence[str]) -> EquationSpec:
    """The checked equation and conditions (ConfigError naming the key): as many conditions as
    the order."""
    try:
        residual, order = residual_text(equation)
    except ValueError as error:
        raise ConfigError(EQUATION_KEY, equation, str(error)) from None
    found = []
    for text in conditions:
        try:
            found.append(condition(text, order))
        except ValueError as error:
            raise ConfigError(CONDITIONS_KEY, text, str(error)) from None
    if len(found) != order:
        raise ConfigError(
            CONDITIONS_KEY,
            _listed(conditions),
            f"an equation of order {order} needs {order} condition{'s' * (order > 1)}, "
            f"got {len(found)}",
        )
    return EquationSpec(residual, order, tuple(found))


def _listed(texts: Sequence[str]) -> str:
    return "[" + ",".join(texts) + "]"


def check_conditions(
    equation: EquationSpec, texts: Sequence[str], x_min: float, x_max: float
) -> None:
    """ConfigError naming the condition whose point lies outside [x_min, x_max]."""
    for text, c in zip(texts, equation.conditions, strict=True):
        if not x_min <= c.x0 <= x_max:
            raise ConfigError(
                CONDITIONS_KEY,
                text,
                f"its point x={c.x0:g} is outside the domain "
                f"[data.x_min, data.x_max] = [{x_min:g}, {x_max:g}]",
            )


def check_residual(equation: EquationSpec, text: str, x: np.ndarray) -> None:
    """ConfigError unless the residual's own x-terms (coefficients, sources) are finite at the
    points x (y and its derivatives held at generic values) and continuous on their range."""
    import sympy
    from sympy.calculus.util import continuous_domain

    residual = parse_residual(equation.residual, equation.order)
    named = enumerate(derivative_symbols(equation.order))
    in_x = residual.xreplace({s: sympy.Rational(3 + k, 7) for k, s in named})
    with np.errstate(all="ignore"):
        values = np.asarray(sympy.lambdify([x_symbol()], in_x, "numpy")(x))
        values = np.broadcast_to(values, x.shape)
    bad = x[~np.isfinite(values.astype(np.complex128)) | (np.abs(np.imag(values)) > 0)]
    first = float(bad.min()) if bad.size else None
    if first is None:
        domain = sympy.Interval(float(x.min()), float(x.max()))
        try:
            missing = domain - continuous_domain(in_x, x_symbol(), domain)
            first = None if missing.is_empty else float(missing.inf)
        except (NotImplementedError, TypeError, ValueError):
            first = None
    if first is not None:
        raise ConfigError(
            EQUATION_KEY,
            text,
            "its residual must be finite (and real) on "
            f"[data.x_min, data.x_max]; not at x={first:.6g}",
        )
