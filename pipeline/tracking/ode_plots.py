"""What an equation's run (the residual objective) adds: its metrics and plots.

`solution.png` draws the network's y against the exact solution where it is known, the
conditions marked; `residual.png` the residual's size along x on a log scale. The metrics are
the residual's MSE and the squared condition errors' sum on the validation grid, and with the
exact solution known the relative L2 error `val_l2re` (the PINN literature's figure).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullLocator

from pipeline.core.data import Dataset
from pipeline.core.results import TrainResult
from pipeline.tracking.plots import DPI, SIZE

L2RE = "val_l2re"


def residual_metrics(result: TrainResult, data: Dataset | None) -> dict[str, float]:
    """`val_residual_mse`, `condition_sse` and, where the exact solution is known, `val_l2re`:
    ||y - y*|| / ||y*|| on the validation grid."""
    metrics = {"val_residual_mse": result.val_residual_mse, "condition_sse": result.condition_sse}
    if data is not None and data.problem.known and result.val_f is not None:
        exact, found = np.ravel(data.y_val).astype(np.float64), np.ravel(result.val_f)
        scale = float(np.linalg.norm(exact))
        if scale > 0:
            metrics[L2RE] = float(np.linalg.norm(found - exact)) / scale
    return metrics


def _axes(title: str, ylabel: str) -> tuple[Figure, object]:
    fig = Figure(figsize=SIZE, dpi=DPI)
    ax = fig.add_axes((0.14, 0.15, 0.79, 0.75))
    fig.text(0.55, 0.95, title, ha="center", va="center", fontsize=10)
    ax.set_xlabel("x")
    ax.set_ylabel(ylabel)
    return fig, ax


def solution_figure(data: Dataset, y: np.ndarray, label: str) -> Figure:
    """The network's y against the exact solution (where known), each condition's point marked
    (and its value, where the condition fixes y itself)."""
    problem = data.problem
    fig, ax = _axes(f"y(x): {problem.label} — {label}", "y")
    x = np.ravel(data.x_val)
    if problem.known:
        ax.plot(x, np.ravel(data.y_val), color="0.4", lw=2, label=problem.f_text)
    ax.plot(x, np.ravel(y), color="C1", lw=1.5, ls="--", label="network y(x)")
    for i, (text, c) in enumerate(zip(problem.conditions, problem.spec.conditions, strict=True)):
        ax.axvline(c.x0, color="C2", lw=0.8, ls=":", label="condition points" if i == 0 else None)
        if c.coefficients[0] != 0 and not any(c.coefficients[1:]):
            value = -c.constant / c.coefficients[0]
            ax.plot([c.x0], [value], "o", ms=5, color="C2")
            ax.annotate(text, (c.x0, value), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.legend(fontsize=8, loc="best")
    return fig


def residual_figure(data: Dataset, residual: np.ndarray, label: str) -> Figure:
    """|residual| along x on a log scale: where the network misses the equation."""
    fig, ax = _axes(f"|residual|: {data.problem.label} — {label}", "|residual|")
    x, size = np.ravel(data.x_val), np.abs(np.ravel(residual))
    shown = np.isfinite(size) & (size > 0)
    ax.semilogy(x[shown], size[shown], color="C3", lw=1)
    ax.yaxis.set_major_locator(LogLocator(numticks=5))
    ax.yaxis.set_minor_locator(NullLocator())
    return fig


def save_equation_plots(
    directory: Path, data: Dataset, result: TrainResult, label: str
) -> list[Path]:
    """Write solution.png and residual.png into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    figures = {
        "solution.png": solution_figure(data, result.val_f, label),
        "residual.png": residual_figure(data, result.val_residual, label),
    }
    for name, fig in figures.items():
        fig.savefig(directory / name)
    return [directory / name for name in figures]
