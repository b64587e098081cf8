"""Training points, the held-out validation grid and the targets of both objectives."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.config import DataConfig


@dataclass(frozen=True)
class Dataset:
    """Column vectors (n, 1) of float32: what the trainer feeds the network."""

    x_train: np.ndarray
    x_val: np.ndarray

    @property
    def y_train(self) -> np.ndarray:
        """log x at the training points: the value objective's target."""
        return np.log(self.x_train)

    @property
    def dy_train(self) -> np.ndarray:
        """1/x at the training points: the derivative objective's target."""
        return 1.0 / self.x_train

    @property
    def y_val(self) -> np.ndarray:
        return np.log(self.x_val)

    @property
    def dy_val(self) -> np.ndarray:
        return 1.0 / self.x_val


def make_dataset(cfg: DataConfig) -> Dataset:
    """The post's uniform grid (19 points on [0.1, 1.9] by default) and a validation grid.

    Validation points are the midpoints of `n_val` equal cells of [x_min, x_max], minus any that
    coincide with a training point, so the held-out error never scores a point the net trained on.
    """
    x_train = np.linspace(cfg.x_min, cfg.x_max, cfg.n_train)
    cell = (cfg.x_max - cfg.x_min) / cfg.n_val
    x_val = cfg.x_min + (np.arange(cfg.n_val) + 0.5) * cell
    tolerance = 1e-6 * (cfg.x_max - cfg.x_min)
    distance = np.abs(x_val[:, None] - x_train[None, :]).min(axis=1)
    x_val = x_val[distance > tolerance]
    return Dataset(
        x_train=x_train.astype(np.float32).reshape(-1, 1),
        x_val=x_val.astype(np.float32).reshape(-1, 1),
    )
