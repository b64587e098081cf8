"""The losses and the validation errors every run reports, on plain weight tensors (TensorFlow).

value: MSE(f(x), y). derivative: MSE(f'(x), y') + anchor_weight * (f(x0) - y0)^2, with f'
taken by an inner GradientTape that watches x (the ODE y' = f', y(x0) = y0). sobolev: the
weighted sum of all three terms, with the weights of `pipeline.objectives`.
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
    """MSE between f(x) and the targets y = f(x) of the problem."""
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
    """MSE(f'(x), y') plus the anchor term; the anchor point x0 is the last row of `x_and_anchor`.

    One forward pass serves both terms: f' is used at the training rows, f at the anchor row.
    """
    f, df = value_and_slope(weights, x_and_anchor, activation, masks)
    slope_error = tf.reduce_mean(tf.square(df[:-1] - dy))
    return slope_error + anchor_weight * tf.square(f[-1, 0] - anchor_y)


def sobolev_loss(
    weights: Sequence[tf.Tensor],
    x_and_anchor: tf.Tensor,
    y: tf.Tensor,
    dy: tf.Tensor,
    activation: str,
    value_weight: tf.Tensor,
    slope_weight: tf.Tensor,
    anchor_weight: tf.Tensor,
    anchor_y: tf.Tensor,
    masks: Masks = None,
) -> tf.Tensor:
    """value_weight * MSE(f, y) + slope_weight * MSE(f', y') + anchor_weight * (f(x0) - y0)^2.

    The anchor x0 is the last row of `x_and_anchor`; one forward pass serves all three terms.
    With the registry's weights this is the derivative loss (1, 0 for f) or Sobolev's.
    """
    f, df = value_and_slope(weights, x_and_anchor, activation, masks)
    value_error = tf.reduce_mean(tf.square(f[:-1] - y))
    slope_error = tf.reduce_mean(tf.square(df[:-1] - dy))
    anchor_error = tf.square(f[-1, 0] - anchor_y)
    return value_weight * value_error + slope_weight * slope_error + anchor_weight * anchor_error


def validation_errors(
    weights: Sequence[tf.Tensor],
    x: tf.Tensor,
    y: tf.Tensor,
    dy: tf.Tensor,
    activation: str,
    masks: Masks = None,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """(f, f', MSE(f, y), MSE(f', y')) on the validation grid: both errors for every run."""
    f, df = value_and_slope(weights, x, activation, masks)
    return f, df, tf.reduce_mean(tf.square(f - y)), tf.reduce_mean(tf.square(df - dy))
