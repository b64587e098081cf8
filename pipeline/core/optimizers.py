"""SGD and Adam as pure update rules on stacked weights, matching `keras.optimizers` step for step.

Keras optimizers own tf.Variables tied to one model, which would pin a compiled loop to one
network; these rules keep the state in tensors the compiled loop carries, per slot: each slot
has its own learning rate, rule (SGD or Adam, as data) and step count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from pipeline.core.specs import LrDecay

ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-7  # keras.optimizers.Adam defaults


def init_moments(weights: Sequence[tf.Tensor]) -> list[tf.Tensor]:
    """Adam's first and second moments per weight, zero (SGD slots carry them unused)."""
    return [tf.zeros_like(w) for w in weights] + [tf.zeros_like(w) for w in weights]


def learning_rates(rate: float, decay: LrDecay, epochs: int, first: int, count: int) -> np.ndarray:
    """The rate at 1-based epochs first .. first+count-1 of a run of `epochs`: `rate` itself until
    the last `decay.fraction` of the epochs, then a half cosine down to `decay.final` x rate at
    the last epoch. Computed per chunk in NumPy: the compiled loop reads one column per epoch."""
    epoch = np.arange(first, first + count, dtype=np.float64)
    start = epochs * (1.0 - decay.fraction)
    progress = np.clip((epoch - start) / max(epochs - start, 1.0), 0.0, 1.0)
    factor = decay.final + (1.0 - decay.final) * 0.5 * (1.0 + np.cos(np.pi * progress))
    return np.where(progress > 0.0, rate * factor, rate).astype(np.float32)


def _per_slot(values: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """A (K,) tensor shaped to broadcast against `like` (K, ...)."""
    return tf.reshape(values, [-1] + [1] * (len(like.shape) - 1))


def apply_gradients(
    weights: Sequence[tf.Tensor],
    grads: Sequence[tf.Tensor],
    moments: Sequence[tf.Tensor],
    learning_rate: tf.Tensor,
    step: tf.Tensor,
    use_adam: tf.Tensor,
    update: tf.Tensor,
    rules: tuple[str, ...] = ("sgd", "adam"),
) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
    """One update of every slot k where `update[k]`; the others keep weights and moments.

    `learning_rate`, `step` (1-based, Adam's bias correction) and `use_adam` are (K,) tensors.
    `rules` are the rules the graph's slots may use: with both, both are computed and each slot
    takes its own, exactly as that rule alone would; with one, only it is (about 30% of a small
    network's epoch is the rule it does not use). SGD slots carry their moments unchanged.
    """
    n = len(weights)
    if "adam" in rules:
        alpha = learning_rate * tf.sqrt(1.0 - ADAM_BETA_2**step) / (1.0 - ADAM_BETA_1**step)
    new_weights, firsts, seconds = [], [], []
    for w, g, m, v in zip(weights, grads, moments[:n], moments[n:], strict=True):
        keep = _per_slot(update, w)
        if "adam" not in rules:  # SGD alone: the moments ride along unchanged
            new_weights.append(tf.where(keep, w - _per_slot(learning_rate, w) * g, w))
            firsts.append(m)
            seconds.append(v)
            continue
        m_next = m + (g - m) * (1.0 - ADAM_BETA_1)
        v_next = v + (tf.square(g) - v) * (1.0 - ADAM_BETA_2)
        stepped = w - m_next * _per_slot(alpha, w) / (tf.sqrt(v_next) + ADAM_EPSILON)
        if "sgd" in rules:
            sgd = w - _per_slot(learning_rate, w) * g
            stepped = tf.where(_per_slot(use_adam, w), stepped, sgd)
        new_weights.append(tf.where(keep, stepped, w))
        firsts.append(tf.where(keep, m_next, m))
        seconds.append(tf.where(keep, v_next, v))
    return new_weights, firsts + seconds
