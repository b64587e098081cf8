"""PNG figures of a trained run (fit, derivative, loss) and of a study (Optuna's own plots).

Figures are built with matplotlib's object API on the Agg canvas (no pyplot state), small and
at modest DPI. A sweep's trial plots share their axes, drawn once per process; each trial only
paints its curve and title on them (about 7 ms a PNG instead of about 40).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Text
from matplotlib.ticker import LogLocator, MaxNLocator, NullLocator
from PIL import Image

DPI = 80
SIZE = (5.0, 3.4)
TITLE_TEXT = 20  # the longest f or f' text a title names


@dataclass(frozen=True)
class Truth:
    """The problem's side of a run's plots: f and f' on the validation grid `x` and at the
    data points, and their legend texts (e.g. "log x", "1/x")."""

    x: np.ndarray
    f: np.ndarray
    df: np.ndarray
    x_points: np.ndarray
    f_points: np.ndarray
    df_points: np.ndarray
    f_text: str
    df_text: str

    def curve(self, kind: str) -> tuple[np.ndarray, np.ndarray, str]:
        """(truth on the grid, truth at the data points, legend text) of "fit" or "derivative"."""
        if kind == "fit":
            return np.ravel(self.f), np.ravel(self.f_points), self.f_text
        return np.ravel(self.df), np.ravel(self.df_points), self.df_text

    def key(self, kind: str) -> tuple:
        """What a shared template of `kind` depends on."""
        grid, points, text = self.curve(kind)
        return kind, np.ravel(self.x).tobytes(), grid.tobytes(), points.tobytes(), text


def _figure(title: str, xlabel: str) -> tuple[Figure, object]:
    fig = Figure(figsize=SIZE, dpi=DPI)
    # Fixed margins: a layout engine would cost more than drawing the plot itself.
    ax = fig.add_axes((0.14, 0.15, 0.79, 0.75))
    fig.text(0.55, 0.95, title, ha="center", va="center", fontsize=10)  # cheaper than a title
    ax.set_xlabel(xlabel)
    # Tick labels are most of a plot's drawing time: a few suffice at this size.
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.yaxis.set_major_locator(MaxNLocator(5))
    return fig, ax


def title(kind: str, truth: Truth, label: str) -> str:
    """`f(x) vs log x — <label>` (or `f'(x) vs 1/x`): the problem's own f or f' named, unless
    its text would not fit a title (a long `expr`; the legend has it in full)."""
    name, text = ("f(x)", "f") if kind == "fit" else ("f'(x)", "f'")
    shown = truth.curve(kind)[2]
    return f"{name} vs {shown if len(shown) <= TITLE_TEXT else 'target ' + text} — {label}"


def curve_figure(kind: str, truth: Truth, y: np.ndarray, label: str) -> Figure:
    """The problem's f ("fit") or f' ("derivative") against the network's on the validation
    grid, the data points marked."""
    grid, points, text = truth.curve(kind)
    x = np.ravel(truth.x)
    fig, ax = _figure(title(kind, truth, label), "x")
    ax.plot(x, grid, color="0.4", lw=2, label=text)
    network = "network f(x)" if kind == "fit" else "network f'(x)"
    ax.plot(x, np.ravel(y), color="C1", lw=1.5, ls="--", label=network)
    ax.plot(np.ravel(truth.x_points), points, "o", ms=3, color="C0", label="data points")
    ax.legend(fontsize=8, loc="best")
    return fig


def fit_figure(truth: Truth, f_val: np.ndarray, label: str) -> Figure:
    """The problem's f against the network's f on the validation grid, data points marked."""
    return curve_figure("fit", truth, f_val, label)


def derivative_figure(truth: Truth, df_val: np.ndarray, label: str) -> Figure:
    """The problem's f' against the network's f' (inner-tape derivative) on the grid."""
    return curve_figure("derivative", truth, df_val, label)


def loss_figure(epochs: np.ndarray, loss: np.ndarray, label: str) -> Figure:
    """The training loss per epoch on a log scale."""
    fig, ax = _figure(f"training loss — {label}", "epoch")
    finite = np.isfinite(loss) & (loss > 0)
    ax.semilogy(epochs[finite], loss[finite], color="C0", lw=1)
    ax.yaxis.set_major_locator(LogLocator(numticks=5))
    if finite.any():  # whole decades: even a curve within one decade gets labelled ticks
        low, high = np.floor(np.log10(loss[finite].min())), np.ceil(np.log10(loss[finite].max()))
        ax.set_ylim(10.0**low, 10.0 ** max(high, low + 1))
    ax.yaxis.set_minor_locator(NullLocator())  # minor log ticks cost more than the plot
    ax.set_ylabel("loss")
    return fig


@dataclass
class _Template:
    """A drawn figure minus its trial-specific artists, whose pixels are reused per trial."""

    canvas: FigureCanvasAgg
    background: object
    line: Line2D
    title: Text
    ylim: tuple[float, float]


_TEMPLATES: dict[tuple, _Template] = {}
LOSS_LIMITS = (1e-8, 1e2)  # the loss axis every trial shares, so loss plots compare at a glance


def forget_templates() -> None:
    """Drop the static figures drawn so far: the next plot of each kind draws its own afresh."""
    _TEMPLATES.clear()


def _template(fig: Figure, line: Line2D, ylim: tuple[float, float]) -> _Template:
    """Draw `fig` once without its title and `line`; keep the pixels to paint them onto."""
    ax = line.axes
    ax.set_ylim(*ylim)
    title = fig.texts[0]
    line.set_animated(True)
    title.set_animated(True)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return _Template(canvas, canvas.copy_from_bbox(fig.bbox), line, title, ylim)


def _curve_template(kind: str, truth: Truth) -> _Template:
    key = truth.key(kind)
    if key not in _TEMPLATES:
        grid = truth.curve(kind)[0]
        fig = curve_figure(kind, truth, grid, "")
        margin = 0.15 * max(float(grid.max() - grid.min()), 1e-6 * float(np.abs(grid).max()))
        ylim = (float(grid.min()) - margin, float(grid.max()) + margin)
        _TEMPLATES[key] = _template(fig, fig.axes[0].lines[1], ylim)
    return _TEMPLATES[key]


def _loss_template(epochs: int) -> _Template:
    key = ("loss", epochs)
    if key not in _TEMPLATES:
        fig = loss_figure(np.array([1.0, epochs]), np.array(LOSS_LIMITS), "")
        fig.axes[0].set_xlim(0, epochs)
        fig.axes[0].set_yticks(np.logspace(*np.log10(LOSS_LIMITS), 6))  # every second decade
        _TEMPLATES[key] = _template(fig, fig.axes[0].lines[0], LOSS_LIMITS)
    return _TEMPLATES[key]


def _fits(template: _Template, y: np.ndarray) -> bool:
    low, high = template.ylim
    return bool(np.all(np.isfinite(y)) and y.min() >= low and y.max() <= high)


def _paint(template: _Template, x: np.ndarray, y: np.ndarray, title: str, path: Path) -> None:
    """The template's pixels, this trial's curve and title on top, written as a PNG."""
    canvas, fig = template.canvas, template.canvas.figure
    canvas.restore_region(template.background)
    template.line.set_data(x, y)
    template.title.set_text(title)
    fig.axes[0].draw_artist(template.line)
    fig.draw_artist(template.title)
    width, height = canvas.get_width_height()
    image = Image.frombuffer("RGBA", (width, height), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    image.convert("RGB").save(path, format="png", dpi=(DPI, DPI))


def save_run_plots(
    directory: Path,
    truth: Truth,
    f_val: np.ndarray,
    df_val: np.ndarray,
    epochs: np.ndarray,
    loss: np.ndarray,
    label: str,
    planned_epochs: int | None = None,
    curves: bool = True,
) -> list[Path]:
    """Write fit.png, derivative.png and loss.png into `directory`, the curves against `truth`
    (loss.png alone without `curves`: an equation's run draws its own, `ode_plots`).

    Every trial of a sweep shares its axes (the truth's range, the loss decades in
    LOSS_LIMITS, the planned epochs, so a pruned trial visibly stops short), so the static part
    is drawn once per process and only the trial's curve and title are painted on it: a few
    milliseconds a plot. A curve outside those axes gets a figure of its own, scaled to it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    f_val, df_val = np.ravel(f_val), np.ravel(df_val)
    kept = np.isfinite(loss) & (loss > 0)
    drawn = {
        "fit.png": ("fit", f_val, title("fit", truth, label)),
        "derivative.png": ("derivative", df_val, title("derivative", truth, label)),
        "loss.png": ("loss", loss[kept], f"training loss — {label}"),
    }
    drawn = drawn if curves else {"loss.png": drawn["loss.png"]}
    paths = []
    for name, (kind, y, text) in drawn.items():
        path = directory / name
        if kind == "loss":
            last = int(epochs[-1])
            template = _loss_template(max(planned_epochs or last, last)) if len(y) else None
            x = epochs[kept]
        else:
            template, x = _curve_template(kind, truth), np.ravel(truth.x)
        if template is not None and _fits(template, y):
            _paint(template, x, y, text, path)
        elif kind == "loss":
            loss_figure(epochs, loss, label).savefig(path)
        else:
            curve_figure(kind, truth, y, label).savefig(path)
        paths.append(path)
    if len(_TEMPLATES) > 32:  # many data grids or epoch counts in one process: start afresh
        _TEMPLATES.clear()
    return paths


def study_values_positive(study: object) -> bool:
    """Whether every finished trial's value is > 0 (a log axis can show them all)."""
    values = [t.value for t in study.trials if t.value is not None]
    return bool(values) and min(values) > 0


def save_study_plots(study: object, directory: Path) -> list[Path]:
    """Optuna's optimisation history, parameter importances and parallel coordinates as PNGs.

    A plot Optuna cannot draw yet (importances need two finished trials with varied params)
    is skipped rather than failing the study's bookkeeping.
    """
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    directory.mkdir(parents=True, exist_ok=True)
    with plt.rc_context():  # Optuna's plots switch the process to ggplot style: keep it to them
        return _save_study_plots(study, directory, optuna_plots)


def _save_study_plots(study: object, directory: Path, optuna_plots: Any) -> list[Path]:
    import matplotlib.pyplot as plt

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
