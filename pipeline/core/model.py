"""The network: a Keras 3 MLP for storage and logging, and its initial weights without Keras.

`build_model` gives the Keras model a run's weights come from and go back into (the best
trial's model is logged in the Keras flavour); `seeded_weights` gives the same initial weights
cheaply. The trainer packs them into `pipeline.core.layout`'s padded stacks to train them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import keras
import numpy as np


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


def initial_weights(model: keras.Model) -> list[np.ndarray]:
    """The model's weights as float32 arrays: [kernel0, bias0, kernel1, bias1, ...]."""
    return [np.asarray(w, dtype=np.float32) for w in model.get_weights()]
