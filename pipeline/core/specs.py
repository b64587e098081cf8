"""Spec types the trainer takes, owned by `core` so that it imports nothing above it.

A learning-rate schedule (`LrDecay`) and a differential equation as the compiled graph needs it
(`EquationSpec`: the residual as SymPy text in x, y, y_x, ..., and the point conditions as
linear combinations of y and its derivatives). All plain, hashable, picklable values: an
`EquationSpec` is part of a compiled graph's cache key.
"""

from __future__ import annotations

from dataclasses import dataclass

# The unknown and its derivatives as an equation names them: y, y_x, y_xx, y_xxx, y_xxxx.
DERIVATIVE_NAMES = ("y", "y_x", "y_xx", "y_xxx", "y_xxxx")
MAX_ORDER = len(DERIVATIVE_NAMES) - 1


@dataclass(frozen=True)
class LrDecay:
    """A learning-rate schedule: the rate holds, then over the last `fraction` of the epochs
    falls along a half cosine to `final` x itself at the last epoch; fraction 0: constant."""

    fraction: float
    final: float


CONSTANT_RATE = LrDecay(fraction=0.0, final=1.0)


@dataclass(frozen=True)
class ConditionSpec:
    """One point condition: sum_k coefficients[k] * y^(k)(x0) + constant = 0."""

    x0: float
    coefficients: tuple[float, ...]  # one per derivative order 0 .. order-1
    constant: float


@dataclass(frozen=True)
class EquationSpec:
    """An ODE of `order` as the graph computes it: `residual`, SymPy text in x and
    DERIVATIVE_NAMES[:order + 1] that is 0 for the solution, and its point conditions."""

    residual: str
    order: int
    conditions: tuple[ConditionSpec, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The names the residual reads, after x: y, y_x, ... up to the order."""
        return DERIVATIVE_NAMES[: self.order + 1]
