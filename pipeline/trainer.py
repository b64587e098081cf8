"""The compiled GradientTape training loop, shared by `pipeline.train` and every sweep trial.

Epochs run inside one XLA-compiled `tf.function` (a graph `while_loop`, no Python per epoch), in
chunks of `report_every` epochs so a caller can watch progress and stop early (pruning) between
chunks. Weights and optimizer state travel as tensors; with `pad_width` every network of one
depth has the same shapes, so a sweep compiles once per (depth, activation, optimizer), not once
per trial. Imports neither MLflow nor Optuna.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from pipeline.data import Dataset
from pipeline.losses import sobolev_loss, validation_errors, value_loss
from pipeline.model import pad_weights, unpad_weights
from pipeline.objectives import get as get_objective
from pipeline.optimizers import apply_gradients, init_slots
from pipeline.results import Report, TrainResult


@dataclass(frozen=True)
class TrainSpec:
    """Everything the loop needs besides the initial weights and the data."""

    activation: str
    optimizer: str
    learning_rate: float
    epochs: int
    objective: str = "value"
    anchor_weight: float = 1.0
    deriv_weight: float = 1.0
    log_every: int = 50
    report_every: int = 500


def limit_threads(threads: int) -> None:
    """Cap TensorFlow's thread pools (before any op runs) so parallel workers share the cores."""
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


@functools.cache
def compiled_chunk(activation: str, optimizer: str, kind: str, masked: bool) -> Callable:
    """The graph that runs up to `n` epochs and then scores the validation grid.

    Cached per (activation, optimizer, kind, masked), `kind` "value" (MSE of f alone) or
    "slope" (the weighted loss with f', weights as data: derivative and sobolev share it); XLA
    compiles it once per set of input shapes, which depend only on depth (and sample counts)
    when weights are padded.
    """

    def loss_of(weights, masks, loss_weights, anchor_y, x, y, dy):
        masks = masks if masked else None
        if kind == "value":
            return value_loss(weights, x, y, activation, masks)
        value_w, slope_w, anchor_w = tf.unstack(loss_weights)
        return sobolev_loss(
            weights, x, y, dy, activation, value_w, slope_w, anchor_w, anchor_y, masks
        )

    def chunk(
        weights,
        slots,
        masks,
        done,
        capacity,
        n,
        lr,
        use_adam,
        loss_weights,
        anchor_y,
        x,
        y,
        dy,
        *val,
    ):
        # XLA fixes the buffer's size at compile time: `capacity` stays the same for every call
        # (report_every) and the runtime `n` <= capacity ends a short last chunk early.
        losses = tf.TensorArray(tf.float32, size=capacity, element_shape=())

        def keep_going(i, w, s, losses, finite):
            return tf.logical_and(i < n, finite)

        def epoch(i, w, s, losses, finite):
            with tf.GradientTape() as tape:
                tape.watch(w)
                loss = loss_of(w, masks, loss_weights, anchor_y, x, y, dy)
            grads = tape.gradient(loss, w)
            step = tf.cast(done + i + 1, tf.float32)
            w, s = apply_gradients(optimizer, w, grads, s, lr, step, use_adam)
            return i + 1, w, s, losses.write(i, loss), tf.math.is_finite(loss)

        _, weights, slots, losses, finite = tf.while_loop(
            keep_going, epoch, (tf.constant(0), list(weights), list(slots), losses, True)
        )
        f, df, val_value, val_deriv = validation_errors(
            weights, *val, activation, masks if masked else None
        )
        return weights, slots, losses.stack(), finite, f, df, val_value, val_deriv

    return tf.function(chunk, jit_compile=True, reduce_retracing=True, autograph=False)


def graph_key(spec: TrainSpec, padded: bool) -> tuple[str, str, str, bool]:
    """Which compiled graph trains `spec`: padded (sweep) graphs serve SGD and Adam alike, so a
    sweep compiles once per (depth, activation, loss kind); unpadded ones are exact to the rule."""
    weights = get_objective(spec.objective).weights(spec.anchor_weight, spec.deriv_weight)
    kind = "slope" if weights.needs_slope else "value"
    return spec.activation, "any" if padded else spec.optimizer, kind, padded


def _fixed_inputs(spec: TrainSpec, data: Dataset) -> list[tf.Tensor]:
    """Learning rate, optimizer switch, loss weights (from the objectives registry), anchor."""
    weights = get_objective(spec.objective).weights(spec.anchor_weight, spec.deriv_weight)
    return [
        tf.constant(spec.learning_rate, tf.float32),
        tf.constant(spec.optimizer == "adam"),
        tf.constant([weights.value, weights.slope, weights.anchor], tf.float32),
        tf.constant(data.anchor_y, tf.float32),
    ]


def _chunk_data(spec: TrainSpec, data: Dataset, chunk: int) -> list[tf.Tensor]:
    """The points chunk `chunk` trains on (the data points, or the objective's collocation
    points with the anchor x0 as last row) and the validation grid."""
    if get_objective(spec.objective).points == "data":
        x, y, dy = data.x_train, data.y_train, data.dy_train
    else:
        x, y, dy = data.collocation(chunk)
    if graph_key(spec, False)[2] == "slope":
        x = np.concatenate([x, [[data.anchor_x]]]).astype(np.float32)
    arrays = (x, y, dy, data.x_val, data.y_val, data.dy_val)
    return [tf.constant(a, tf.float32) for a in arrays]


def _history_mask(epochs_run: int, log_every: int) -> np.ndarray:
    epochs = np.arange(1, epochs_run + 1)
    keep = (epochs % log_every == 0) | (epochs == 1) | (epochs == epochs_run)
    return epochs[keep]


def train(
    spec: TrainSpec,
    weights: Sequence[np.ndarray],
    data: Dataset,
    on_report: Callable[[Report], bool] | None = None,
    pad_width: int | None = None,
) -> TrainResult:
    """Train from `weights` ([kernel0, bias0, ...]) and return history and final metrics.

    `on_report` is called after every chunk; returning True stops training there (pruning).
    The loop also stops at the first non-finite loss and records that epoch in `diverged_at`.
    `pad_width` (>= every hidden width) trains the same network inside zero-padded, masked
    weights so that networks of one depth reuse one compiled graph; results are unchanged.
    """
    started = time.perf_counter()
    key = graph_key(spec, padded=pad_width is not None)
    fn = compiled_chunk(*key)
    masks: list[np.ndarray] = []
    if pad_width is not None:
        weights_in, (weights, masks) = weights, pad_weights(weights, pad_width)
    w = [tf.constant(a, dtype=tf.float32) for a in weights]
    mask_tensors = [tf.constant(m) for m in masks]
    slots = init_slots(key[1], w)
    fixed = _fixed_inputs(spec, data)
    resampled = data.resample and get_objective(spec.objective).points == "colloc"
    points = _chunk_data(spec, data, 0)
    capacity = tf.constant(spec.report_every)
    losses: list[np.ndarray] = []
    reports: list[Report] = []
    done, diverged_at, stopped = 0, None, False
    val_value = val_deriv = math.nan
    call = None
    while done < spec.epochs:
        n = min(spec.report_every, spec.epochs - done)
        if resampled and reports:
            points = _chunk_data(spec, data, len(reports))
        args = (w, slots, mask_tensors, tf.constant(done), capacity, tf.constant(n), *fixed)
        args = (*args, *points)
        # Looked up once per training: the tf.function's per-call dispatch costs ~0.3 ms more
        # than the concrete function's, and a trial makes epochs / report_every calls.
        if call is None:
            call = fn.get_concrete_function(*args)
        w, slots, chunk_losses, finite, f, df, val_value, val_deriv = call(*args)
        chunk_losses = chunk_losses.numpy()[:n]
        if not bool(finite):  # the loop stopped at the first non-finite loss; the rest is unset
            chunk_losses = chunk_losses[: int(np.argmin(np.isfinite(chunk_losses))) + 1]
        losses.append(chunk_losses)
        done += len(chunk_losses)
        val_value, val_deriv = float(val_value), float(val_deriv)
        if not bool(finite):
            diverged_at = done
            break
        report = Report(done, float(chunk_losses[-1]), val_value, val_deriv)
        reports.append(report)
        if on_report is not None and on_report(report) and done < spec.epochs:
            stopped = True
            break
    trained = [t.numpy() for t in w]
    if pad_width is not None:
        trained = unpad_weights(trained, weights_in)
    all_losses = np.concatenate(losses)
    epochs = _history_mask(done, spec.log_every)
    return TrainResult(
        history_epochs=epochs,
        history_loss=all_losses[epochs - 1],
        reports=reports,
        val_value_mse=val_value,
        val_deriv_mse=val_deriv,
        epochs_run=done,
        diverged_at=diverged_at,
        stopped_early=stopped,
        weights=trained,
        val_f=f.numpy().ravel(),
        val_df=df.numpy().ravel(),
        seconds=time.perf_counter() - started,
    )
