"""The math of a population of networks on stacked weights (TensorFlow): f, f', losses, errors.

Every tensor carries the slot axis first (see `pipeline.core.layout`): slot k's network reads only
slot k's weights and inputs, so K networks train in one graph exactly as each would alone.
f' is taken by an inner GradientTape that watches x; because x is per slot, the gradient of the
summed outputs is each slot's own derivative at each of its points.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

ACTIVATION_FUNCTIONS = {
    "sigmoid": tf.math.sigmoid,
    "tanh": tf.math.tanh,
    "softplus": tf.math.softplus,
    "relu": tf.nn.relu,
    "elu": tf.nn.elu,
    "silu": tf.nn.silu,
}


def _activate(z: tf.Tensor, activations: Sequence[str], index: tf.Tensor) -> tf.Tensor:
    """Each slot's own activation of z (K, n, W); `index` (K,) picks from `activations`.

    tf.where is exact and sends no gradient to the activations a slot does not use. (Runtime
    branches that skip unused activations or layers were tried: they multiplied XLA's compile
    time by 5-10 for the second-order graphs.)
    """
    out = ACTIVATION_FUNCTIONS[activations[-1]](z)
    for i in range(len(activations) - 2, -1, -1):
        mine = tf.equal(index, i)[:, None, None]
        out = tf.where(mine, ACTIVATION_FUNCTIONS[activations[i]](z), out)
    return out


def forward(
    weights: Sequence[tf.Tensor],
    masks: Sequence[tf.Tensor],
    active: tf.Tensor,
    act_index: tf.Tensor,
    x: tf.Tensor,
    activations: Sequence[str],
) -> tf.Tensor:
    """f(x) (K, n, 1) of K padded networks at their own points x (K, n, 1).

    Masks zero the padding (it adds nothing and gets no gradient); hidden layer l+1 of slot k
    runs where active[k, l] and passes its input through otherwise.
    """
    k_in, b_in, k_hidden, b_hidden, k_out, b_out = weights
    m_in, m_hidden, m_out = masks
    h = _activate(x * (k_in * m_in) + b_in[:, None, :], activations, act_index)
    for layer in range(k_hidden.shape[1]):
        z = tf.matmul(h, k_hidden[:, layer] * m_hidden[:, layer]) + b_hidden[:, layer, None, :]
        h = tf.where(active[:, layer, None, None] > 0, _activate(z, activations, act_index), h)
    return tf.matmul(h, k_out * m_out) + b_out[:, None, :]


def value_and_slope(
    weights: Sequence[tf.Tensor],
    masks: Sequence[tf.Tensor],
    active: tf.Tensor,
    act_index: tf.Tensor,
    x: tf.Tensor,
    activations: Sequence[str],
) -> tuple[tf.Tensor, tf.Tensor]:
    """f(x) and df/dx (both (K, n, 1)), the derivative from an inner tape watching x."""
    with tf.GradientTape() as inner:
        inner.watch(x)
        f = forward(weights, masks, active, act_index, x, activations)
    return f, inner.gradient(f, x)


def _mse(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.square(a - b), axis=[1, 2])


def slot_losses(
    f: tf.Tensor, df: tf.Tensor | None, y: tf.Tensor, dy: tf.Tensor, y0: tf.Tensor, w: tf.Tensor
) -> tf.Tensor:
    """Per-slot loss (K,): w[:, 0] MSE(f, y) + w[:, 2] (f(x0) - y0)^2 + w[:, 1] MSE(f', y').

    The points' rows come first and the anchor x0 is the last row of f; `df` is None in
    graphs for objectives without a slope term (no inner tape there). A term of weight 0 adds
    an exact 0, even where it is not finite, so a diverging loss shows as the term that overflowed.
    """
    loss = _weighted(w[:, 0], _mse(f[:, :-1], y)) + _weighted(w[:, 2], tf.square(f[:, -1, 0] - y0))
    if df is not None:
        loss += _weighted(w[:, 1], _mse(df[:, :-1], dy))
    return loss


def _weighted(weight: tf.Tensor, term: tf.Tensor) -> tf.Tensor:
    return tf.where(tf.equal(weight, 0.0), tf.zeros_like(term), weight * term)


def validation_errors(f: tf.Tensor, df: tf.Tensor, y: tf.Tensor, dy: tf.Tensor) -> tuple:
    """MSE(f, y) and MSE(f', y') per slot on the validation grid: both, for every run."""
    return _mse(f, y), _mse(df, dy)
