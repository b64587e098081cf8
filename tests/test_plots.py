"""A trial's three PNGs: painted onto shared axes, byte for byte what a fresh drawing gives.

Plots are drawn once per process and then only the trial's curve and title are painted on the
saved pixels; these tests catch a curve left over from the previous trial, a curve clipped by
the shared axes, and a loss history with a non-finite tail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.tracking import plots

X_TRAIN = np.linspace(0.1, 1.9, 19, dtype=np.float32)
X_VAL = np.linspace(0.11, 1.89, 99, dtype=np.float32)
LOG = plots.Truth(
    X_VAL, np.log(X_VAL), 1 / X_VAL, X_TRAIN, np.log(X_TRAIN), 1 / X_TRAIN, "log x", "1/x"
)
EPOCHS = np.concatenate([[1], np.arange(50, 10_001, 50)])
NAMES = ("fit.png", "derivative.png", "loss.png")


def _curves(wobble: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    f = np.log(X_VAL) + wobble * np.sin(5 * X_VAL)
    df = 1.0 / X_VAL + wobble * np.cos(4 * X_VAL)
    loss = 0.5 * np.exp(-EPOCHS / (2000 + 1000 * wobble)) + 1e-5
    return f, df, loss


def _draw(directory: Path, wobble: float, label: str, loss: np.ndarray | None = None) -> dict:
    f, df, default_loss = _curves(wobble)
    loss = default_loss if loss is None else loss
    plots.save_run_plots(directory, LOG, f, df, EPOCHS, loss, label)
    return {name: (directory / name).read_bytes() for name in NAMES}


@pytest.fixture(autouse=True)
def fresh_templates():
    plots.forget_templates()
    yield
    plots.forget_templates()


def test_a_painted_trial_equals_the_same_trial_painted_first(tmp_path: Path) -> None:
    _draw(tmp_path / "a", 0.3, "study #1")
    after_other = _draw(tmp_path / "b", 0.05, "study #2")
    plots.forget_templates()
    alone = _draw(tmp_path / "c", 0.05, "study #2")
    assert after_other == alone  # nothing of trial #1's curve or title is left


def test_each_trial_gets_its_own_curve_and_title(tmp_path: Path) -> None:
    first = _draw(tmp_path / "a", 0.3, "study #1")
    second = _draw(tmp_path / "b", 0.3, "study #2")
    third = _draw(tmp_path / "c", 0.05, "study #2")
    for name in NAMES:
        assert first[name] != second[name]  # the title
        assert second[name] != third[name]  # the curve
        assert first[name].startswith(b"\x89PNG\r\n\x1a\n")


def test_a_curve_beyond_the_shared_axes_gets_a_figure_scaled_to_it(tmp_path: Path) -> None:
    f = 5 * np.log(X_VAL)  # far below the log x axis at small x
    _, df, loss = _curves(0.0)
    loss = loss * 1e4  # above the shared loss decades
    plots.save_run_plots(tmp_path, LOG, f, df, EPOCHS, loss, "wild")
    plots.fit_figure(LOG, f, "wild").savefig(tmp_path / "fit-fresh.png")
    plots.loss_figure(EPOCHS, loss, "wild").savefig(tmp_path / "loss-fresh.png")
    assert (tmp_path / "fit.png").read_bytes() == (tmp_path / "fit-fresh.png").read_bytes()
    assert (tmp_path / "loss.png").read_bytes() == (tmp_path / "loss-fresh.png").read_bytes()


def test_a_diverged_loss_plots_its_finite_part(tmp_path: Path) -> None:
    _, _, loss = _curves(0.1)
    loss[120:] = np.inf
    diverged = _draw(tmp_path / "a", 0.1, "x", loss)
    truncated = _draw(tmp_path / "b", 0.1, "x", np.where(np.isfinite(loss), loss, np.nan))
    assert diverged["loss.png"] == truncated["loss.png"]
    assert diverged["loss.png"] != _draw(tmp_path / "c", 0.1, "x")["loss.png"]


def test_a_pruned_trial_stops_short_on_the_planned_epoch_axis(tmp_path: Path) -> None:
    from PIL import Image

    f, df, loss = _curves(0.1)
    short = EPOCHS <= 500  # pruned at epoch 500 of a planned 10,000
    plots.save_run_plots(tmp_path, LOG, f, df, EPOCHS[short], loss[short], "pruned", 10_000)
    pixels = np.asarray(Image.open(tmp_path / "loss.png").convert("RGB")).astype(int)
    blue = np.abs(pixels - np.array([31, 119, 180])).sum(axis=2) < 60  # the curve's colour C0
    columns = np.flatnonzero(blue.any(axis=0))
    width = pixels.shape[1]
    assert columns.size and columns.max() < 0.3 * width  # the curve ends near the left edge


def test_the_truth_is_the_problems_and_templates_are_kept_apart(tmp_path: Path) -> None:
    x = np.linspace(0.0, np.pi, 50, dtype=np.float32)
    points = np.linspace(0.0, np.pi, 7, dtype=np.float32)
    sin = plots.Truth(
        x,
        np.sin(3 * x),
        3 * np.cos(3 * x),
        points,
        np.sin(3 * points),
        3 * np.cos(3 * points),
        "sin 3x",
        "3 cos 3x",
    )
    assert plots.title("fit", sin, "sin-value #2") == "f(x) vs sin 3x — sin-value #2"
    assert plots.title("derivative", LOG, "t") == "f'(x) vs 1/x — t"
    long = plots.Truth(*[np.ones(3)] * 6, "x" * 30, "y" * 30)
    assert plots.title("derivative", long, "t") == "f'(x) vs target f' — t"
    f, df, loss = np.sin(3 * x) + 0.01, 3 * np.cos(3 * x), np.geomspace(1, 1e-4, len(EPOCHS))
    _draw(tmp_path / "log", 0.1, "same")  # a log template first, in this process
    plots.save_run_plots(tmp_path / "after", sin, f, df, EPOCHS, loss, "same")
    plots.forget_templates()
    plots.save_run_plots(tmp_path / "alone", sin, f, df, EPOCHS, loss, "same")
    for name in NAMES:
        assert (tmp_path / "after" / name).read_bytes() == (tmp_path / "alone" / name).read_bytes()
    assert (tmp_path / "after" / "fit.png").read_bytes() != (
        tmp_path / "log" / "fit.png"
    ).read_bytes()


def test_study_plots_leave_the_run_plots_style_alone(tmp_path: Path) -> None:
    """Optuna's matplotlib plots switch to ggplot style; a study's plots must not restyle the
    trial plots drawn after them in the same process."""
    import matplotlib.pyplot as plt
    import optuna

    study = optuna.create_study()
    space = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for value in (0.3, 0.1, 0.2):
        trial = optuna.trial.create_trial(params={"x": value}, distributions=space, value=value)
        study.add_trial(trial)
    before = _draw(tmp_path / "before", 0.1, "same")
    colours = plt.rcParams["axes.prop_cycle"]
    assert plots.save_study_plots(study, tmp_path / "study")
    assert plt.rcParams["axes.prop_cycle"] == colours
    plots.forget_templates()
    assert _draw(tmp_path / "after", 0.1, "same") == before
