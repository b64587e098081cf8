"""What a trained network leaves in MLflow: uniform params, history, final metrics, plots, weights.

Shared by `pipeline.train` and every sweep trial, so single runs and trials compare in one view.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.tracking import MlflowClient

from pipeline import tracking
from pipeline.data import Dataset
from pipeline.model import count_params
from pipeline.plots import plot_process_init, save_run_plots
from pipeline.trainer import TrainResult

WEIGHTS_ARTIFACT = "weights/weights.npz"


def run_params(
    hidden: Sequence[int],
    activation: str,
    optimizer: str,
    learning_rate: float,
    epochs: int,
    seed: int,
    objective: str,
) -> dict[str, Any]:
    """The params every run carries, whatever produced it (parallel coordinates needs them all)."""
    return {
        "n_layers": len(hidden),
        "hidden": list(hidden),
        "n_params": count_params(hidden),
        "activation": activation,
        "optimizer": optimizer,
        "learning_rate": learning_rate,
        "epochs": epochs,
        "seed": seed,
        "objective": objective,
    }


def objective_value(objective: str, result: TrainResult) -> float:
    """What a study minimises: the objective's own validation error."""
    return result.val_value_mse if objective == "value" else result.val_deriv_mse


def final_metrics(objective: str, result: TrainResult) -> dict[str, float]:
    """Final validation errors of both objectives, the minimised one, and run facts."""
    return {
        "val_value_mse": result.val_value_mse,
        "val_deriv_mse": result.val_deriv_mse,
        "objective_value": objective_value(objective, result),
        "final_loss": result.final_loss,
        "epochs_run": result.epochs_run,
        "train_seconds": result.seconds,
    }


def record_training(
    client: MlflowClient,
    run_id: str,
    result: TrainResult,
    data: Dataset,
    params: Mapping[str, Any],
    objective: str,
    label: str,
    tags: Mapping[str, str] | None = None,
    render: Callable[..., Any] = save_run_plots,
) -> dict[str, float]:
    """Log a trained network into `run_id` (one metric batch, one upload); return the finals.

    `render` draws the plots (`save_run_plots` here, or a `BackgroundRecorder`'s plot process).
    """
    final = final_metrics(objective, result)
    tracking.log_training(
        client,
        run_id,
        params,
        (result.history_epochs, result.history_loss),
        [(r.epoch, r.val_value_mse, r.val_deriv_mse) for r in result.reports],
        final,
        final_step=result.epochs_run,
        tags=tags,
    )
    with tracking.scratch_dir() as scratch:
        root = Path(scratch)
        render(
            root / "plots",
            data.x_train,
            data.x_val,
            result.val_f,
            result.val_df,
            result.history_epochs,
            result.history_loss,
            label,
        )
        (root / "weights").mkdir()
        np.savez(root / WEIGHTS_ARTIFACT, *result.weights)
        tracking.log_directory(client, run_id, root)
    return final


def load_weights(client: MlflowClient, run_id: str) -> list[np.ndarray]:
    """The trained weights a run stored with `record_training`."""
    with tracking.scratch_dir() as scratch:
        path = client.download_artifacts(run_id, WEIGHTS_ARTIFACT, scratch)
        with np.load(path) as archive:
            return [archive[f"arr_{i}"] for i in range(len(archive.files))]


class BackgroundRecorder:
    """Records finished trials on a background thread while the next trial trains.

    Matplotlib holds the GIL for most of a trial's recording, so the plots are drawn in a
    separate process; the thread only waits for them and makes the MLflow calls. XLA training
    releases the GIL, so on two cores tracking overlaps training instead of adding to it.
    `drain` waits for everything submitted; call it before reading runs back or exiting.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recorder")
        self._plots = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=plot_process_init,
        )
        self._pending: list[Future] = []

    def warm_up(self) -> None:
        """Start the plot process now, while the first trial trains, not when its plots are due."""
        self._plots.submit(int)

    def render(self, *args: Any) -> None:
        """`save_run_plots(*args)` in the plot process (in this thread if that process died)."""
        try:
            self._plots.submit(save_run_plots, *args).result()
        except BrokenProcessPool:
            save_run_plots(*args)

    def submit(self, task: Callable[[], None]) -> None:
        """Queue `task`; its failure is reported at `drain`, not raised into the trial loop."""
        self._pending = [f for f in self._pending if not f.done() or f.exception()]
        self._pending.append(self._pool.submit(task))

    def drain(self) -> int:
        """Wait for every queued task; print and count the ones that failed."""
        failed = 0
        for future in self._pending:
            error = future.exception()
            if error is not None:
                failed += 1
                print(f"warning: recording a run failed: {error!r}", file=sys.stderr)
        self._pending = []
        return failed

    def close(self) -> None:
        """Drain, then stop the thread and the plot process."""
        self.drain()
        self._pool.shutdown()
        self._plots.shutdown()
