"""The network: a Keras 3 MLP for storage and logging, and the same math as a pure function.

The trainer runs `forward` on plain weight tensors so that one compiled graph serves every
network of the same depth, activation and optimizer (no retracing per trial); `build_model`
gives the Keras model those weights come from and go back into.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from pipeline.config import ACTIVATIONS

ACTIVATION_FUNCTIONS = {
    "sigmoid": tf.math.sigmoid,
    "tanh": tf.math.tanh,
    "softplus": tf.math.softplus,
    "relu": tf.nn.relu,
    "elu": tf.nn.elu,
    "silu": tf.nn.silu,
}
assert tuple(ACTIVATION_FUNCTIONS) == ACTIVATIONS


def build_model(hidden: Sequence[int], activation: str, seed: int) -> keras.Sequential:
    """Dense(h, activation) per width in `hidden`, then Dense(1); Glorot init seeded per layer."""
    layers: list[keras.layers.Layer] = [keras.Input(shape=(1,))]
    widths = [*hidden, 1]
    for index, units in enumerate(widths):
        last = index == len(widths) - 1
        layers.append(
            keras.layers.Dense(
                units,
                activation=None if last else activation,
                kernel_initializer=_kernel_initializer(seed, index),
            )
        )
    return keras.Sequential(layers)


def _kernel_initializer(seed: int, layer: int) -> keras.initializers.Initializer:
    return keras.initializers.GlorotUniform(seed=seed * 1000 + layer)


def seeded_weights(hidden: Sequence[int], seed: int) -> list[np.ndarray]:
    """The weights `build_model(hidden, _, seed)` starts from, without building the model.

    The same initializers give the same values; a sweep trial needs only these, and skipping
    the Keras model saves ~20 ms a trial.
    """
    widths = [1, *hidden, 1]
    weights = []
    for layer, shape in enumerate(itertools.pairwise(widths)):
        kernel = _kernel_initializer(seed, layer)(shape=shape, dtype="float32")
        weights += [np.asarray(kernel, dtype=np.float32), np.zeros(shape[1], np.float32)]
    return weights


def forward(
    weights: Sequence[tf.Tensor],
    x: tf.Tensor,
    activation: str,
    masks: Sequence[tf.Tensor] | None = None,
) -> tf.Tensor:
    """The Keras model's output for `weights` = [kernel0, bias0, kernel1, bias1, ...].

    `masks` (one 0/1 tensor per kernel) let zero-padded wider weights compute exactly the
    narrower network: masked entries add nothing and receive no gradient.
    """
    act = ACTIVATION_FUNCTIONS[activation]
    h = x
    last = len(weights) // 2 - 1
    for layer in range(last + 1):
        kernel = weights[2 * layer] if masks is None else weights[2 * layer] * masks[layer]
        h = tf.matmul(h, kernel) + weights[2 * layer + 1]
        if layer != last:
            h = act(h)
    return h


def initial_weights(model: keras.Model) -> list[np.ndarray]:
    """The model's weights in `forward`'s order, as float32 arrays."""
    return [np.asarray(w, dtype=np.float32) for w in model.get_weights()]


def pad_weights(
    weights: Sequence[np.ndarray], width: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Zero-pad every hidden layer to `width` units; return padded weights and kernel masks.

    Networks of one depth then share tensor shapes, so one compiled graph trains them all.
    """
    padded, masks = [], []
    for index in range(0, len(weights), 2):
        kernel, bias = weights[index], weights[index + 1]
        rows = 1 if index == 0 else width
        cols = 1 if index == len(weights) - 2 else width
        big = np.zeros((rows, cols), np.float32)
        big[: kernel.shape[0], : kernel.shape[1]] = kernel
        mask = np.zeros((rows, cols), np.float32)
        mask[: kernel.shape[0], : kernel.shape[1]] = 1.0
        wide_bias = np.zeros((cols,), np.float32)
        wide_bias[: bias.shape[0]] = bias
        padded += [big, wide_bias]
        masks.append(mask)
    return padded, masks


def unpad_weights(padded: Sequence[np.ndarray], like: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Cut padded weights back to the shapes of `like` (the unpadded originals)."""
    return [p[tuple(slice(0, n) for n in w.shape)] for p, w in zip(padded, like, strict=True)]
