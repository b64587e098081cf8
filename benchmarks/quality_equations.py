"""The shipped equations' cells of `quality.py`: which objective they run and the issue's target.

An equation's problem trains the residual objective only; its rows add the relative L2 error
against the exact solution of the baseline and of the best trial (chosen by `objective_value`).
"""

from __future__ import annotations

from typing import Any

EQUATIONS = ("logistic", "oscillator", "poisson", "gauss")  # the residual objective's
L2RE_TARGET = 1e-3  # the best trial's val_l2re on every shipped equation (median over seeds)


def compatible(problem: str, objective: str) -> bool:
    """An equation's problem trains the residual objective only; a target's every other."""
    return (problem in EQUATIONS) == (objective == "residual")


def report_l2re(medians: dict[tuple, Any]) -> None:
    """The issue's target for every equation run: the best trial's val_l2re <= 1e-3."""
    rows = [(key, o) for key, o in medians.items() if key[1] == "residual"]
    if rows:
        print("\nTargets (equations, medians over the seeds run; best chosen by objective_value):")
    for (problem, _, _), o in rows:
        verdict = "met" if o.best_l2re <= L2RE_TARGET else "MISSED"
        print(f"  {problem}: best val_l2re {o.best_l2re:.2e} (baseline {o.baseline_l2re:.2e}): "
              f"{verdict} (target <= {L2RE_TARGET:g})")  # fmt: skip
