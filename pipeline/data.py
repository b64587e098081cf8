"""Training points, collocation points, the held-out validation grid and their targets.

(Interim, log x only: the problem registry replaces the targets; the fields are the contract.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.config import DataConfig


def _col(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, np.float32).reshape(-1, 1)


@dataclass(frozen=True)
class Dataset:
    """Column vectors (n, 1) of float32: what the trainer feeds the network."""

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
    anchor_y: float

    def collocation(self, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, f, f') the chunk-th report chunk trains on: the fixed grid."""
        return self.x_colloc, self.y_colloc, self.dy_colloc


def make_dataset(
    cfg: DataConfig, problem: object = None, anchor_x: float = 1.0, seed: int = 0
) -> Dataset:
    """The post's uniform grid (19 points on [0.1, 1.9] by default) and a validation grid."""
    x_train = np.linspace(cfg.x_min, cfg.x_max, cfg.n_train)
    cell = (cfg.x_max - cfg.x_min) / cfg.n_val
    x_val = cfg.x_min + (np.arange(cfg.n_val) + 0.5) * cell
    tolerance = 1e-6 * (cfg.x_max - cfg.x_min)
    distance = np.abs(x_val[:, None] - x_train[None, :]).min(axis=1)
    x_val = x_val[distance > tolerance]
    x_train, x_val = _col(x_train), _col(x_val)
    return Dataset(
        x_train, _col(np.log(x_train)), _col(1 / x_train),
        x_train, _col(np.log(x_train)), _col(1 / x_train),
        x_val, _col(np.log(x_val)), _col(1 / x_val),
        float(anchor_x), float(np.log(anchor_x)),
    )  # fmt: skip
