"""SGD and Adam as pure update rules on weight tensors, matching `keras.optimizers` step for step.

Keras optimizers own tf.Variables tied to one model, which would pin a compiled loop to one
trial; these rules keep optimizer state in tensors the compiled loop carries, so it is shared.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-7  # keras.optimizers.Adam defaults


def init_slots(optimizer: str, weights: Sequence[tf.Tensor]) -> list[tf.Tensor]:
    """Optimizer state: none for SGD; first and second moments per weight for Adam (and for
    `any`, the mode whose graph serves both, choosing per call)."""
    if optimizer == "sgd":
        return []
    return [tf.zeros_like(w) for w in weights] + [tf.zeros_like(w) for w in weights]


def apply_gradients(
    optimizer: str,
    weights: Sequence[tf.Tensor],
    grads: Sequence[tf.Tensor],
    slots: Sequence[tf.Tensor],
    learning_rate: tf.Tensor,
    step: tf.Tensor,
    use_adam: tf.Tensor | None = None,
) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
    """One update; `step` is the 1-based iteration count (Adam's bias correction uses it).

    `optimizer="any"` computes both rules and takes Adam's where the boolean `use_adam` says,
    so one compiled graph trains SGD and Adam trials alike, each exactly as its own rule would.
    """
    if optimizer == "sgd":
        return [w - learning_rate * g for w, g in zip(weights, grads, strict=True)], []
    n = len(weights)
    alpha = learning_rate * tf.sqrt(1.0 - ADAM_BETA_2**step) / (1.0 - ADAM_BETA_1**step)
    new_weights, moments, variances = [], [], []
    for w, g, m, v in zip(weights, grads, slots[:n], slots[n:], strict=True):
        m = m + (g - m) * (1.0 - ADAM_BETA_1)
        v = v + (tf.square(g) - v) * (1.0 - ADAM_BETA_2)
        adam = w - m * alpha / (tf.sqrt(v) + ADAM_EPSILON)
        new_weights.append(
            adam if optimizer == "adam" else tf.where(use_adam, adam, w - learning_rate * g)
        )
        moments.append(m)
        variances.append(v)
    return new_weights, moments + variances
