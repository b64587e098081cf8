"""The losses and the validation errors every run reports, on plain weight tensors (TensorFlow).

value: MSE(f(x), log x). derivative: MSE(f'(x), 1/x) + anchor_weight * (f(x0) - log x0)^2,
with f' taken by an inner GradientTape that watches x (the ODE y' = 1/x, y(x0) = log x0).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from pipeline.model import forward

Masks = Sequence[tf.Tensor] | None


def value_and_slope(
    weights: Sequence[tf.Tensor], x: tf.Tensor, activation: str, masks: Masks = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """f(x) and df/dx at every row of x, the derivative from an inner tape watching x."""
    with tf.GradientTape() as inner:
        inner.watch(x)
        f = forward(weights, x, activation, masks)
    # Each output row depends on its own input row only, so the gradient of the sum is f'(x_i).
    return f, inner.gradient(f, x)


def value_loss(
    weights: Sequence[tf.Tensor], x: tf.Tensor, y: tf.Tensor, activation: str, masks: Masks = None
) -> tf.Tensor:
    """MSE between f(x) and the targets y = log x."""
    return tf.reduce_mean(tf.square(forward(weights, x, activation, masks) - y))


def derivative_loss(
    weights: Sequence[tf.Tensor],
    x_and_anchor: tf.Tensor,
    dy: tf.Tensor,
    activation: str,
    anchor_weight: tf.Tensor,
    anchor_y: tf.Tensor,
    masks: Masks = None,
) -> tf.Tensor:
    """MSE(f'(x), 1/x) plus the anchor term; the anchor point x0 is the last row of `x_and_anchor`.

    One forward pass serves both terms: f' is used at the training rows, f at the anchor row.
    """
    f, df = value_and_slope(weights, x_and_anchor, activation, masks)
    slope_error = tf.reduce_mean(tf.square(df[:-1] - dy))
    return slope_error + anchor_weight * tf.square(f[-1, 0] - anchor_y)


def validation_errors(
    weights: Sequence[tf.Tensor],
    x: tf.Tensor,
    y: tf.Tensor,
    dy: tf.Tensor,
    activation: str,
    masks: Masks = None,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """(f, f', MSE(f, log x), MSE(f', 1/x)) on the validation grid: both errors for every run."""
    f, df = value_and_slope(weights, x, activation, masks)
    return f, df, tf.reduce_mean(tf.square(f - y)), tf.reduce_mean(tf.square(df - dy))
