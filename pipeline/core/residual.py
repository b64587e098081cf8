"""An equation's residual and conditions for a population of networks (TensorFlow).

y and its derivatives up to the equation's order come from nested GradientTapes watching x
(each tape differentiates the one inside it; x is per slot, so the gradient of summed outputs is
each slot's own derivative at each of its points). The residual is the equation's SymPy text
turned into TensorFlow operations; the conditions are rows of coefficients at their points,
appended to the points as extra rows. One graph per (layout, equation): the spec is constant.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import tensorflow as tf

from pipeline.core.losses import forward
from pipeline.core.specs import EquationSpec


def derivatives(
    weights: Sequence[tf.Tensor],
    net: Sequence,
    x: tf.Tensor,
    activations: Sequence[str],
    order: int,
) -> list[tf.Tensor]:
    """[y, y', ..., y^(order)] (each (K, n, 1)) of K networks at their points x (K, n, 1)."""
    if order == 0:
        return [forward(weights, *net, x, activations)]
    with tf.GradientTape() as tape:
        tape.watch(x)
        lower = derivatives(weights, net, x, activations, order - 1)
    return [*lower, tape.gradient(lower[-1], x)]


@functools.cache
def residual_function(residual: str, order: int) -> Callable[..., tf.Tensor]:
    """The residual as a function of (x, y, y_x, ...) tensors, built by SymPy's lambdify."""
    import sympy

    from pipeline.core.equations import parse_residual

    expr = parse_residual(residual, order)
    names = [sympy.Symbol("x", real=True)] + [
        sympy.Symbol(n, real=True) for n in EquationSpec(residual, order, ()).names
    ]
    return sympy.lambdify(names, expr, modules="tensorflow")


def _condition_rows(spec: EquationSpec, size: tf.Tensor) -> tf.Tensor:
    points = tf.constant([[[c.x0] for c in spec.conditions]], tf.float32)  # (1, m, 1)
    return tf.tile(points, tf.stack([size, 1, 1]))


def evaluate(
    weights: Sequence[tf.Tensor],
    net: Sequence,
    x: tf.Tensor,
    activations: Sequence[str],
    spec: EquationSpec,
) -> tuple[list[tf.Tensor], tf.Tensor, tf.Tensor]:
    """At the points x (K, n, 1) and the conditions' points: y and its derivatives at the
    points, the residual there (K, n, 1) and the condition errors (K, m)."""
    n = tf.shape(x)[1]
    rows = tf.concat([x, _condition_rows(spec, tf.shape(x)[0])], axis=1)
    ds = derivatives(weights, net, rows, activations, spec.order)
    at_points = [d[:, :n] for d in ds]
    residual = residual_function(spec.residual, spec.order)(x, *at_points)
    residual = tf.broadcast_to(tf.cast(residual, tf.float32), tf.shape(x))  # a constant residual
    errors = []
    for j, c in enumerate(spec.conditions):
        error = tf.fill(tf.shape(x)[:1], tf.constant(c.constant, tf.float32))
        for k, coefficient in enumerate(c.coefficients):
            if coefficient != 0.0:
                error += coefficient * ds[k][:, n + j, 0]
        errors.append(error)
    return at_points, residual, tf.stack(errors, axis=1)


def slot_losses(
    weights: Sequence[tf.Tensor],
    net: Sequence,
    x: tf.Tensor,
    activations: Sequence[str],
    spec: EquationSpec,
    w: tf.Tensor,
) -> tf.Tensor:
    """Per-slot loss (K,): w[:, 0] MSE(residual) + w[:, 2] sum of squared condition errors.

    x's last row is the population's anchor, which an equation does not use.
    """
    _, residual, errors = evaluate(weights, net, x[:, :-1], activations, spec)
    mse = tf.reduce_mean(tf.square(residual), axis=[1, 2])
    return w[:, 0] * mse + w[:, 2] * tf.reduce_sum(tf.square(errors), axis=1)


def validation(
    weights: Sequence[tf.Tensor],
    net: Sequence,
    x: tf.Tensor,
    activations: Sequence[str],
    spec: EquationSpec,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """On the validation grid: f, f', the residual, its MSE and the squared condition errors'
    sum (per slot)."""
    ds, residual, errors = evaluate(weights, net, x, activations, spec)
    mse = tf.reduce_mean(tf.square(residual), axis=[1, 2])
    return ds[0], ds[1], residual, mse, tf.reduce_sum(tf.square(errors), axis=1)
