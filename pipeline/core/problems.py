"""The problem a run solves: a target f with its derivative f', read from `conf/problem/`.

A problem is a few strings (f and f' in SymPy syntax, a label, legend texts), so it pickles to
spawned workers and recorders as-is; the NumPy callables are built from the strings on first use
and cached per process. `problem=expr` takes any closed form `problem.f` in x and derives f'
symbolically. TensorFlow-free; SymPy is imported only when an expression is first evaluated.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.config_values import CONF_DIR, ConfigError
from pipeline.core.specs import EquationSpec

PROBLEMS_DIR = CONF_DIR / "problem"
EXPR = "expr"  # the problem whose f the user types (`problem.f`)
ODE = "ode"  # the problem whose equation the user types (`problem.equation`)
NO_SOLUTION = "nan"  # f of an equation whose exact solution is not known
CHECK_POINTS = 4097  # the dense grid on which f and f' must be finite
TEXT_LIMIT = 40  # legend and label texts longer than this are cut


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

    @property
    def spec(self) -> EquationSpec:
        """The equation as the trainer's residual graph takes it (checked when read)."""
        from pipeline.core.equations import spec

        assert self.equation is not None, f"problem={self.name} has no equation"
        return spec(self.equation, self.conditions)

    def f(self, x: np.ndarray) -> np.ndarray:
        """f at every entry of x (float64, the shape of x)."""
        return _evaluate(self.expression, x)

    def df(self, x: np.ndarray) -> np.ndarray:
        """f' at every entry of x (float64, the shape of x)."""
        return _evaluate(self.derivative, x)

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
        An equation's problem has checks of its own (`ode_problems.check`)."""
        if self.equation is not None:
            from pipeline.core.ode_problems import check

            return check(self, x_min, x_max, points)
        if not _finite(self, np.array([anchor_x])).all():
            raise self._not_finite("objective.anchor_x", anchor_x, "at the anchor x0")
        grid = np.linspace(x_min, x_max, CHECK_POINTS)
        if points is not None:
            grid = np.concatenate([grid, np.ravel(points)])
        bad = grid[~_finite(self, grid)]
        first = (
            float(bad.min()) if bad.size else _gap(self.expression, self.derivative, x_min, x_max)
        )
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
        ours, exact = self.df(grid), _evaluate(derived, grid)
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


@functools.cache
def _gap(f: str, df: str, x_min: float, x_max: float) -> float | None:
    """The smallest x in [x_min, x_max] where SymPy finds f or f' not continuous (a pole, a
    log of a negative number): grid points can step over a pole. None where it finds none or
    cannot tell (the grid check then stands alone)."""
    import sympy
    from sympy.calculus.util import continuous_domain

    domain = sympy.Interval(x_min, x_max)
    try:
        defined = continuous_domain(parse(f), _symbol(), domain)
        defined = defined.intersect(continuous_domain(parse(df), _symbol(), domain))
    except (NotImplementedError, TypeError, ValueError):
        return None
    missing = domain - defined
    return None if missing.is_empty else float(missing.inf)


def _finite(problem: Problem, x: np.ndarray) -> np.ndarray:
    return np.isfinite(problem.f(x)) & np.isfinite(problem.df(x))


def _evaluate(text: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(all="ignore"):
        y = np.asarray(_numeric(text)(x))
    if np.iscomplexobj(y):  # e.g. sqrt(x) for x < 0 through SymPy's complex branch
        y = np.where(np.abs(y.imag) > 0, np.nan, y.real)
    return np.broadcast_to(y.astype(np.float64), x.shape).copy()  # a constant f' is a scalar


@functools.cache
def _numeric(text: str) -> Callable[[np.ndarray], np.ndarray]:
    import sympy

    return sympy.lambdify(_symbol(), parse(text), modules="numpy")


def _symbol():
    import sympy

    return sympy.Symbol("x", real=True)


@functools.cache
def parse(text: str) -> Any:
    """The SymPy expression of `text`, a closed form in the one symbol x (ValueError if not)."""
    import sympy
    from sympy.core.function import AppliedUndef
    from sympy.parsing.sympy_parser import parse_expr, standard_transformations

    if "__" in text or ";" in text or "lambda" in text:  # parse_expr evaluates Python
        raise ValueError("not a closed-form expression in x")
    x = _symbol()
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


@functools.cache
def sympy_names() -> dict[str, Any]:
    """SymPy's public names, the only globals an expression may use."""
    import sympy

    return {name: getattr(sympy, name) for name in dir(sympy) if not name.startswith("_")}


def derive(text: str) -> str:
    """f' of the expression `text`, differentiated symbolically, as SymPy text."""
    import sympy

    return str(sympy.diff(parse(text), _symbol()))


def short(text: str) -> str:
    """`text`, cut to TEXT_LIMIT characters for legends and labels."""
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 1] + "…"


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


def read_problem(section: Mapping[str, Any]) -> Problem:
    """The checked problem of the `problem` config group (raises ConfigError naming the key).

    Shipped problems give f' by hand (`problem.df`; `Problem.check` holds it to SymPy's
    derivative of f on the domain); `expr` derives f' with SymPy.
    """
    name = section.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("problem.name", name, "must be a non-empty name")
    if "equation" in section:
        from pipeline.core.ode_problems import read_ode

        return read_ode(section, name)
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


def shipped(name: str) -> Problem:
    """A problem shipped under conf/problem/ (for code and tests that compose no config)."""
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(OmegaConf.load(PROBLEMS_DIR / f"{name}.yaml"), resolve=True)
    return read_problem(raw["problem"])
