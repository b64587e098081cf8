"""Small conversions the network tests share: networks stacked into slots as the trainer does,
and one network's validation errors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from pipeline.core.data import Dataset
from pipeline.core.layout import Layout, pack
from pipeline.core.losses import validation_errors, value_and_slope
from pipeline.core.trainer import TrainSpec
from pipeline.settings import CONSTANT_RATE


def tensors(arrays: Sequence[np.ndarray], dtype: tf.DType = tf.float32) -> list[tf.Tensor]:
    return [tf.constant(a, dtype) for a in arrays]


def stacked(
    networks: Sequence[Sequence[np.ndarray]],
    activations: Sequence[str],
    layout: Layout,
    dtype: tf.DType = tf.float32,
) -> tuple[list[tf.Tensor], tuple]:
    """Networks packed into one slot each: (weights, (masks, active, act_index)) as tensors."""
    packed = [pack(layout, w, a) for w, a in zip(networks, activations, strict=True)]
    weights = [np.stack([p.weights[i] for p in packed]) for i in range(6)]
    masks = [np.stack([p.masks[i] for p in packed]) for i in range(3)]
    active = np.stack([p.active for p in packed])
    index = np.array([p.activation for p in packed], np.int32)
    return tensors(weights, dtype), (tensors(masks, dtype), tf.constant(active, dtype), index)


def per_slot(x: np.ndarray, k: int, dtype: tf.DType = tf.float32) -> tf.Tensor:
    """The same points (n, 1) for each of k slots: (k, n, 1)."""
    return tf.constant(np.broadcast_to(x, (k, *x.shape)), dtype)


def validation_errors_of(
    weights: Sequence[np.ndarray], activation: str, data: Dataset
) -> tuple[float, float]:
    """One network's (value, derivative) validation MSEs on `data`'s validation grid, as it is."""
    hidden = [len(b) for b in weights[1:-2:2]]
    layout = Layout.exact(hidden, activation, "sgd")  # the rule plays no part in f or f'
    w, net = stacked([weights], [activation], layout)
    f, df = value_and_slope(w, *net, per_slot(data.x_val, 1), layout.activations)
    value_mse, deriv_mse = validation_errors(f, df, data.y_val[None], data.dy_val[None])
    return float(value_mse[0]), float(deriv_mse[0])


# What the trainer tests train with unless a test says otherwise: the value fit, unit weights.
LOSS_AND_SCHEDULE = {
    "lr_decay": CONSTANT_RATE,
    "objective": "value",
    "anchor_weight": 1.0,
    "deriv_weight": 1.0,
    "log_every": 50,
    "report_every": 500,
}


def train_spec(
    activation: str, optimizer: str, learning_rate: float, epochs: int, **changes: object
) -> TrainSpec:
    """A TrainSpec with the tests' usual loss and schedule, `changes` applied."""
    return TrainSpec(activation, optimizer, learning_rate, epochs, **(LOSS_AND_SCHEDULE | changes))


def keras_fit(model, data: Dataset, optimizer, epochs: int) -> np.ndarray:
    """The per-epoch losses of Keras `model.fit` on the data points, full batch, unshuffled: the
    post's way, which our trainer must match."""
    model.compile(optimizer=optimizer, loss="mse")
    fit = model.fit(
        data.x_train,
        data.y_train,
        epochs=epochs,
        batch_size=len(data.x_train),
        shuffle=False,
        verbose=0,
    )
    return np.asarray(fit.history["loss"])
