"""The points a run trains and is scored on, with the problem's f and f' there.

Value fits train on the data points (the post's 19 for `log`); objectives that use f' train on
collocation points, a fixed grid or fresh uniform points every report chunk; every run is scored
on a held-out validation grid that holds neither.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.config_values import ConfigError
from pipeline.core.problems import Problem


@dataclass(frozen=True)
class DataConfig:
    """Domain [x_min, x_max], data and collocation points, a held-out validation grid."""

    x_min: float
    x_max: float
    n_train: int
    n_val: int
    n_colloc: int
    resample: bool


Points = tuple[np.ndarray, np.ndarray, np.ndarray]  # x, f(x), f'(x): float32 columns (n, 1)


@dataclass(frozen=True, eq=False)
class Dataset:
    """Column vectors (n, 1) of float32 the trainer feeds the network; picklable."""

    x_train: np.ndarray
    y_train: np.ndarray
    dy_train: np.ndarray
    x_colloc: np.ndarray
    y_colloc: np.ndarray
    dy_colloc: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    dy_val: np.ndarray
    anchor_x: float
    anchor_y: float  # f(x0)
    problem: Problem
    resample: bool = False
    seed: int = 0

    def collocation(self, chunk: int) -> Points:
        """The collocation points report chunk `chunk` (0-based) trains on: the fixed grid, or
        with `data.resample` fresh uniform points, as many, seeded by (seed, chunk)."""
        if not self.resample:
            return self.x_colloc, self.y_colloc, self.dy_colloc
        rng = np.random.default_rng((self.seed, chunk))
        low, high = float(self.x_colloc.min()), float(self.x_colloc.max())
        return _targets(self.problem, rng.uniform(low, high, len(self.x_colloc)))


def _targets(problem: Problem, x: np.ndarray) -> Points:
    # f and f' at the float32 points themselves, so targets and inputs agree to the last bit.
    x32 = np.asarray(x, np.float32).reshape(-1, 1)
    x64 = x32.astype(np.float64)
    return x32, problem.f(x64).astype(np.float32), problem.df(x64).astype(np.float32)


def validation_grid(cfg: DataConfig, avoid: list[np.ndarray]) -> np.ndarray:
    """Midpoints of `n_val` equal cells of [x_min, x_max], minus any that coincide with a point
    of `avoid` (the training grids), so the held-out error never scores a trained point."""
    cell = (cfg.x_max - cfg.x_min) / cfg.n_val
    x_val = cfg.x_min + (np.arange(cfg.n_val) + 0.5) * cell
    tolerance = 1e-6 * (cfg.x_max - cfg.x_min)
    trained = np.sort(np.concatenate(avoid))
    right = np.clip(np.searchsorted(trained, x_val), 1, len(trained) - 1)
    distance = np.minimum(np.abs(x_val - trained[right - 1]), np.abs(x_val - trained[right]))
    kept = x_val[distance > tolerance]
    if len(kept) < (cfg.n_val + 1) // 2:
        raise ConfigError(
            "data.n_colloc",
            cfg.n_colloc,
            f"its grid holds {cfg.n_val - len(kept)} of the {cfg.n_val} validation points "
            f"(cell midpoints, data.n_val); pick another count, e.g. {cfg.n_colloc + 1}",
        )
    return kept


def make_dataset(
    cfg: DataConfig, problem: Problem, anchor_x: float | None, seed: int = 0
) -> Dataset:
    """Data points (uniform grid of `n_train`), the collocation grid (`n_colloc`) and the
    validation grid on [x_min, x_max], with `problem`'s f and f' there, and the anchor (x0, f(x0)).

    Raises ConfigError (naming the key and the problem) where f or f' is not finite there.
    `seed` seeds resampled collocation points (`data.resample`). An equation's problem has
    no anchor (None): its conditions pin it; the row the trainer keeps for one is then x_min.
    """
    anchor_x = cfg.x_min if anchor_x is None else anchor_x
    x_train = np.linspace(cfg.x_min, cfg.x_max, cfg.n_train)
    x_colloc = np.linspace(cfg.x_min, cfg.x_max, cfg.n_colloc)
    x_val = validation_grid(cfg, [x_train, x_colloc])
    # Checked at the float32 points the targets are computed at: rounding can land on a pole.
    used = np.concatenate([x_train, x_colloc, x_val]).astype(np.float32).astype(np.float64)
    problem.check(cfg.x_min, cfg.x_max, anchor_x, used)
    train, colloc, val = (_targets(problem, x) for x in (x_train, x_colloc, x_val))
    return Dataset(
        *train,
        *colloc,
        *val,
        anchor_x=float(anchor_x),
        anchor_y=float(problem.f(np.array([anchor_x], np.float64))[0]),
        problem=problem,
        resample=cfg.resample,
        seed=seed,
    )
