"""Closed forms typed as text (SymPy syntax, one symbol x): parsed, differentiated, evaluated.

The text -> SymPy -> NumPy helpers that a target's f and f' (`core.problems`), an equation
(`core.equations`) and its exact solution (`core.exact`) all rest on. SymPy is imported only when
an expression is first parsed; the NumPy callables are cached per process.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

TEXT_LIMIT = 40  # legend and label texts longer than this are cut


def x_symbol() -> Any:
    """SymPy's x, real."""
    import sympy

    return sympy.Symbol("x", real=True)


@functools.cache
def sympy_names() -> dict[str, Any]:
    """SymPy's public names, the only globals an expression may use."""
    import sympy

    return {name: getattr(sympy, name) for name in dir(sympy) if not name.startswith("_")}


@functools.cache
def parse(text: str) -> Any:
    """The SymPy expression of `text`, a closed form in the one symbol x (ValueError if not)."""
    import sympy
    from sympy.core.function import AppliedUndef
    from sympy.parsing.sympy_parser import parse_expr, standard_transformations

    if "__" in text or ";" in text or "lambda" in text:  # parse_expr evaluates Python
        raise ValueError("not a closed-form expression in x")
    x = x_symbol()
    # SymPy's names and no Python builtins: `open(...)` becomes an unknown function, not a call.
    names = {**sympy_names(), "__builtins__": {}}
    try:
        expr = parse_expr(
            text, local_dict={"x": x}, global_dict=names, transformations=standard_transformations
        )
    except Exception as error:  # SyntaxError, TokenError, TypeError, ... from parse_expr
        raise ValueError(f"does not parse ({type(error).__name__})") from None
    if not isinstance(expr, sympy.Expr):
        raise ValueError("is not an expression in x")
    others = sorted(str(s) for s in expr.free_symbols - {x})
    unknown = sorted({str(f.func) for f in expr.atoms(AppliedUndef)})
    if others or unknown:
        raise ValueError(f"uses {', '.join(others + unknown)}; only the symbol x is allowed")
    return expr


def derive(text: str) -> str:
    """f' of the expression `text`, differentiated symbolically, as SymPy text."""
    import sympy

    return str(sympy.diff(parse(text), x_symbol()))


def evaluate(text: str, x: np.ndarray) -> np.ndarray:
    """The expression `text` at every entry of x (float64, the shape of x; NaN where complex)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(all="ignore"):
        y = np.asarray(_numeric(text)(x))
    if np.iscomplexobj(y):  # e.g. sqrt(x) for x < 0 through SymPy's complex branch
        y = np.where(np.abs(y.imag) > 0, np.nan, y.real)
    return np.broadcast_to(y.astype(np.float64), x.shape).copy()  # a constant f' is a scalar


@functools.cache
def _numeric(text: str) -> Callable[[np.ndarray], np.ndarray]:
    import sympy

    return sympy.lambdify(x_symbol(), parse(text), modules="numpy")


def first_gap(f: str, df: str, x_min: float, x_max: float) -> float | None:
    """The smallest x in [x_min, x_max] where SymPy finds f or f' not continuous (a pole, a
    log of a negative number): grid points can step over a pole. None where it finds none or
    cannot tell (the grid check then stands alone)."""
    import sympy
    from sympy.calculus.util import continuous_domain

    domain = sympy.Interval(x_min, x_max)
    try:
        defined = continuous_domain(parse(f), x_symbol(), domain)
        defined = defined.intersect(continuous_domain(parse(df), x_symbol(), domain))
    except (NotImplementedError, TypeError, ValueError):
        return None
    missing = domain - defined
    return None if missing.is_empty else float(missing.inf)


def short(text: str) -> str:
    """`text`, cut to TEXT_LIMIT characters for legends and labels."""
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 1] + "…"
