"""PNG figures of a trained run (fit, derivative, loss) and of a study (Optuna's own plots).

Figures are built with matplotlib's object API on the Agg canvas (no pyplot state), small and
at modest DPI: a trial's three plots cost tens of milliseconds, not a good part of the trial.
"""

from __future__ import annotations

import signal
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, MaxNLocator, NullLocator

DPI = 80
SIZE = (5.0, 3.4)


def _figure(title: str, xlabel: str) -> tuple[Figure, object]:
    fig = Figure(figsize=SIZE, dpi=DPI)
    # Fixed margins: a layout engine would cost more than drawing the plot itself.
    ax = fig.add_axes((0.14, 0.15, 0.82, 0.75))
    fig.text(0.55, 0.95, title, ha="center", va="center", fontsize=10)  # cheaper than a title
    ax.set_xlabel(xlabel)
    # Tick labels are most of a plot's drawing time: a few suffice at this size.
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.yaxis.set_major_locator(MaxNLocator(5))
    return fig, ax


def fit_figure(x_train: np.ndarray, x_val: np.ndarray, f_val: np.ndarray, label: str) -> Figure:
    """log x against the network's f on the validation grid, training points marked."""
    fig, ax = _figure(f"f(x) vs log x — {label}", "x")
    ax.plot(x_val, np.log(x_val), color="0.4", lw=2, label="log x")
    ax.plot(x_val, f_val, color="C1", lw=1.5, ls="--", label="network f(x)")
    ax.plot(x_train, np.log(x_train), "o", ms=3, color="C0", label="training points")
    ax.legend(fontsize=8)
    return fig


def derivative_figure(
    x_train: np.ndarray, x_val: np.ndarray, df_val: np.ndarray, label: str
) -> Figure:
    """1/x against the network's f' (inner-tape derivative) on the validation grid."""
    fig, ax = _figure(f"f'(x) vs 1/x — {label}", "x")
    ax.plot(x_val, 1.0 / x_val, color="0.4", lw=2, label="1/x")
    ax.plot(x_val, df_val, color="C1", lw=1.5, ls="--", label="network f'(x)")
    ax.plot(x_train, 1.0 / x_train, "o", ms=3, color="C0", label="training points")
    ax.legend(fontsize=8)
    return fig


def loss_figure(epochs: np.ndarray, loss: np.ndarray, label: str) -> Figure:
    """The training loss per epoch on a log scale."""
    fig, ax = _figure(f"training loss — {label}", "epoch")
    finite = np.isfinite(loss) & (loss > 0)
    ax.semilogy(epochs[finite], loss[finite], color="C0", lw=1)
    ax.yaxis.set_major_locator(LogLocator(numticks=5))
    ax.yaxis.set_minor_locator(NullLocator())  # minor log ticks cost more than the plot
    ax.set_ylabel("loss")
    return fig


def save_run_plots(
    directory: Path,
    x_train: np.ndarray,
    x_val: np.ndarray,
    f_val: np.ndarray,
    df_val: np.ndarray,
    epochs: np.ndarray,
    loss: np.ndarray,
    label: str,
) -> list[Path]:
    """Write fit.png, derivative.png and loss.png into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    x_train, x_val = np.ravel(x_train), np.ravel(x_val)
    figures = {
        "fit.png": fit_figure(x_train, x_val, f_val, label),
        "derivative.png": derivative_figure(x_train, x_val, df_val, label),
        "loss.png": loss_figure(epochs, loss, label),
    }
    paths = []
    for name, fig in figures.items():
        fig.savefig(directory / name)
        paths.append(directory / name)
    return paths


def study_values_positive(study: object) -> bool:
    """Whether every finished trial's value is > 0 (a log axis can show them all)."""
    values = [t.value for t in study.trials if t.value is not None]
    return bool(values) and min(values) > 0


def plot_process_init() -> None:
    """Start of a plot process (this module only, no TensorFlow): Ctrl-C is the sweep's to
    handle, so plots already queued still get drawn; and it dies with its sweep process, even
    one killed with SIGKILL, instead of lingering."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the pool still ends with a clean exit
        pass


def save_study_plots(study: object, directory: Path) -> list[Path]:
    """Optuna's optimisation history, parameter importances and parallel coordinates as PNGs.

    A plot Optuna cannot draw yet (importances need two finished trials with varied params)
    is skipped rather than failing the study's bookkeeping.
    """
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    directory.mkdir(parents=True, exist_ok=True)
    makers = {
        "optimization_history.png": optuna_plots.plot_optimization_history,
        "param_importances.png": optuna_plots.plot_param_importances,
        "parallel_coordinate.png": optuna_plots.plot_parallel_coordinate,
    }
    paths = []
    for name, make in makers.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ax = make(study)
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue
        fig = ax.figure if hasattr(ax, "figure") else np.ravel(ax)[0].figure
        if name == "optimization_history.png" and study_values_positive(study):
            ax.set_yscale("log")  # good trials are orders of magnitude below the baseline
        fig.set_size_inches(8, 5)
        fig.savefig(directory / name, dpi=DPI, bbox_inches="tight")
        plt.close(fig)
        paths.append(directory / name)
    return paths
