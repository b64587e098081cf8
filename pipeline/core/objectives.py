"""The objectives a run can minimise, as one registry: what each trains on and what it minimises.

Every target objective's loss has one form, a weighted sum of three terms on plain numbers:
    value * MSE(f, y) + slope * MSE(f', y') + anchor * (f(x0) - y0)^2
so the trainer takes the weights as data (one compiled graph serves every objective that needs
f', another the value fits) and nothing past this module tests an objective's name. The
residual objective (an equation's problem) has no target: value * MSE(residual) + anchor *
sum of the squared condition errors, in a graph of its own per equation.
TensorFlow-free: the recording process and the config readers use it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol


class Errors(Protocol):
    """Validation errors as a report or a result carries them."""

    val_value_mse: float
    val_deriv_mse: float
    val_residual_mse: float
    condition_sse: float


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms MSE(f, y), MSE(f', y') and (f(x0) - y0)^2."""

    value: float
    slope: float
    anchor: float

    @property
    def needs_slope(self) -> bool:
        """Whether the loss uses f' (an inner tape watching x: a costlier graph)."""
        return self.slope != 0.0


@dataclass(frozen=True)
class Objective:
    """One objective: its name, the points it trains on, its loss and what a study minimises."""

    name: str
    summary: str
    points: Literal["data", "colloc"]  # the problem's data points, or collocation points
    fits_value: bool
    fits_slope: bool
    anchored: bool  # the anchor term (weight `anchor_weight`) pins f's free constant
    residual: bool = False  # an equation's residual and conditions (problem=ode and the like)

    def _slope_weight(self, deriv_weight: float) -> float:
        # Beside a value term the slope term is weighted by `deriv_weight`; alone it is the loss.
        if not self.fits_slope:
            return 0.0
        return deriv_weight if self.fits_value else 1.0

    def weights(
        self, anchor_weight: float, deriv_weight: float, condition_weight: float = 0.0
    ) -> LossWeights:
        """The loss weights under the run's `objective.anchor_weight` / `deriv_weight` (for
        the residual objective: 1 for the residual, `condition_weight` for the conditions)."""
        if self.residual:
            return LossWeights(value=1.0, slope=0.0, anchor=condition_weight)
        return LossWeights(
            value=1.0 if self.fits_value else 0.0,
            slope=self._slope_weight(deriv_weight),
            anchor=anchor_weight if self.anchored else 0.0,
        )

    def minimised(
        self, errors: Errors, deriv_weight: float, condition_weight: float = 0.0
    ) -> float:
        """The validation error a study of this objective minimises (`objective_value`): the
        loss's own combination of f and f' errors, on the validation grid, without the anchor;
        for the residual objective what a user without the exact solution can compute, the
        residual on the validation grid plus `condition_weight` x the squared condition errors."""
        if self.residual:
            return errors.val_residual_mse + condition_weight * errors.condition_sse
        value = errors.val_value_mse if self.fits_value else 0.0
        return value + self._slope_weight(deriv_weight) * errors.val_deriv_mse


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("value", "MSE(f, y) on the data points", "data", True, False, False),
        Objective(
            "derivative",
            "MSE(f', y') on collocation points + anchor_weight * (f(x0) - y0)^2",
            "colloc",
            fits_value=False,
            fits_slope=True,
            anchored=True,
        ),
        Objective(
            "sobolev",
            "MSE(f, y) + deriv_weight * MSE(f', y') on collocation points",
            "colloc",
            fits_value=True,
            fits_slope=True,
            anchored=False,
        ),
        Objective(
            "residual",
            "MSE(residual) on collocation points + condition_weight * sum of condition errors^2",
            "colloc",
            fits_value=False,
            fits_slope=False,
            anchored=False,
            residual=True,
        ),
    )
}


def get(name: str) -> Objective:
    """The registered objective `name` (KeyError for an unknown one; configs check first)."""
    return OBJECTIVES[name]
