"""What training produces, as plain numbers and arrays: progress reports and the final result.

Kept apart from the trainer (and TensorFlow) so the process that records finished trials can
receive them without importing TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Report:
    """Progress after `epoch` epochs: the last training loss and both validation errors."""

    epoch: int
    loss: float
    val_value_mse: float
    val_deriv_mse: float
    # The residual objective's: MSE of the residual on the validation grid, and the sum of the
    # squared condition errors (nan for other objectives).
    val_residual_mse: float = float("nan")
    condition_sse: float = float("nan")


@dataclass(frozen=True)
class TrainResult:
    """Loss history (1-based epochs at `log_every` resolution), reports and final state."""

    history_epochs: np.ndarray
    history_loss: np.ndarray
    reports: list[Report]
    val_value_mse: float
    val_deriv_mse: float
    epochs_run: int
    diverged_at: int | None
    stopped_early: bool
    weights: list[np.ndarray]
    val_f: np.ndarray
    val_df: np.ndarray
    seconds: float
    val_residual_mse: float = float("nan")  # the residual objective's, as in `Report`
    condition_sse: float = float("nan")
    val_residual: np.ndarray | None = None  # the residual on the validation grid

    @property
    def final_loss(self) -> float:
        return float(self.history_loss[-1])
