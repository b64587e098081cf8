"""The network's math: inner-tape derivatives, the pure forward pass, padding, optimizer rules.

Checked against closed forms, central differences and Keras (`model(x)`, `keras.optimizers`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import tensors as _tensors

from pipeline.config import ACTIVATIONS
from pipeline.data import Dataset
from pipeline.losses import derivative_loss, value_and_slope
from pipeline.model import (
    build_model,
    forward,
    initial_weights,
    pad_weights,
    seeded_weights,
    unpad_weights,
)
from pipeline.optimizers import apply_gradients, init_slots

# --- the math -------------------------------------------------------------------------------

# One hidden layer with known weights: f(x) = sum_i w2_i act(w1_i x + b1_i) + b2.
W1 = np.array([[0.5, -1.2, 2.0, 0.9]])
B1 = np.array([0.1, 0.3, -0.7, 0.0])
W2 = np.array([[1.5], [-0.4], [0.8], [-1.1]])
B2 = np.array([0.2])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


ANALYTIC = {  # activation: (act, act')
    "sigmoid": (_sigmoid, lambda z: _sigmoid(z) * (1.0 - _sigmoid(z))),
    "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
    "softplus": (lambda z: np.log1p(np.exp(z)), _sigmoid),
}


@pytest.mark.parametrize("activation", sorted(ANALYTIC))
def test_inner_tape_slope_equals_analytic_derivative(dataset: Dataset, activation: str) -> None:
    act, act_prime = ANALYTIC[activation]
    x = np.concatenate([dataset.x_train, dataset.x_val]).astype(np.float64)
    z = x @ W1 + B1
    f_exact = act(z) @ W2 + B2
    df_exact = (act_prime(z) * W1) @ W2  # f'(x) = sum_i w2_i w1_i act'(w1_i x + b1_i)

    f, df = value_and_slope(_tensors([W1, B1, W2, B2]), tf.constant(x, tf.float32), activation)

    np.testing.assert_allclose(f.numpy(), f_exact, atol=1e-5)
    np.testing.assert_allclose(df.numpy(), df_exact, atol=1e-5)
    assert np.ptp(df_exact) > 0.1  # a slope that varies, so the comparison means something


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_inner_tape_slope_equals_central_differences_deep(activation: str) -> None:
    # float64 throughout, so central differences are accurate to ~1e-9.
    rng = np.random.default_rng(7)
    widths = [1, 8, 6, 5, 1]
    weights = []
    for a, b in itertools.pairwise(widths):
        weights += [rng.normal(0, 1, (a, b)), rng.normal(0, 0.5, (b,))]
    w = _tensors(weights, tf.float64)
    x = np.linspace(0.13, 1.87, 23).reshape(-1, 1)
    h = 1e-6
    f_plus = forward(w, tf.constant(x + h), activation).numpy()
    f_minus = forward(w, tf.constant(x - h), activation).numpy()
    _, df = value_and_slope(w, tf.constant(x), activation)
    np.testing.assert_allclose(df.numpy(), (f_plus - f_minus) / (2 * h), atol=1e-6)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_forward_equals_keras_model(dataset: Dataset, activation: str) -> None:
    model = build_model([7, 5, 3], activation, seed=3)
    model.layers[-1].bias.assign([0.25])  # non-zero biases, so they are tested too
    model.layers[0].bias.assign(np.linspace(-1, 1, 7))
    x = dataset.x_val
    expected = np.asarray(model(x))
    got = forward(_tensors(initial_weights(model)), tf.constant(x), activation).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_build_model_is_seeded_and_shaped() -> None:
    a = initial_weights(build_model([10, 10], "sigmoid", seed=0))
    b = initial_weights(build_model([10, 10], "sigmoid", seed=0))
    c = initial_weights(build_model([10, 10], "sigmoid", seed=1))
    assert [w.shape for w in a] == [(1, 10), (10,), (10, 10), (10,), (10, 1), (1,)]
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert not np.array_equal(a[2], c[2])


@pytest.mark.parametrize("hidden", [(10, 10), (7, 5, 3), (64, 4, 33, 9)])
def test_seeded_weights_are_the_models_initial_weights(hidden: tuple[int, ...]) -> None:
    built = initial_weights(build_model(hidden, "tanh", seed=3))
    direct = seeded_weights(hidden, seed=3)
    assert [w.shape for w in direct] == [w.shape for w in built]
    assert all(np.array_equal(u, v) for u, v in zip(built, direct, strict=True))
    assert not np.array_equal(seeded_weights(hidden, seed=4)[0], direct[0])


def test_padded_masked_forward_equals_unpadded(dataset: Dataset) -> None:
    model = build_model([6, 9], "tanh", seed=5)
    model.layers[0].bias.assign(np.linspace(-0.5, 0.5, 6))
    weights = initial_weights(model)
    padded, masks = pad_weights(weights, 12)
    assert [p.shape for p in padded] == [(1, 12), (12,), (12, 12), (12,), (12, 1), (1,)]
    x = tf.constant(np.concatenate([dataset.x_train, [[1.0]]]), tf.float32)

    f, df = value_and_slope(_tensors(weights), x, "tanh")
    wp, mp = _tensors(padded), _tensors(masks)
    f_pad, df_pad = value_and_slope(wp, x, "tanh", mp)
    np.testing.assert_allclose(f_pad.numpy(), f.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(df_pad.numpy(), df.numpy(), rtol=1e-6, atol=1e-6)

    # Padded entries receive no gradient (through the inner tape too), so training leaves them 0.
    with tf.GradientTape() as tape:
        tape.watch(wp)
        loss = derivative_loss(wp, x, dataset.dy_train, "tanh", 1.0, 0.0, mp)
    grads = tape.gradient(loss, wp)
    for grad, weight, original in zip(grads, padded, weights, strict=True):
        outside = np.ones(weight.shape, bool)
        outside[tuple(slice(0, n) for n in original.shape)] = False
        assert np.all(grad.numpy()[outside] == 0.0)
        assert np.any(grad.numpy()[~outside] != 0.0)
    unpadded = unpad_weights(padded, weights)
    assert all(np.array_equal(u, w) for u, w in zip(unpadded, weights, strict=True))


@pytest.mark.parametrize(
    ("name", "keras_optimizer"),
    [
        ("sgd", lambda: keras.optimizers.SGD(learning_rate=0.1)),
        ("adam", lambda: keras.optimizers.Adam(learning_rate=0.01)),
    ],
)
def test_apply_gradients_matches_keras_optimizer(
    name: str, keras_optimizer: Callable[[], keras.optimizers.Optimizer]
) -> None:
    rng = np.random.default_rng(11)
    shapes = [(1, 4), (4,), (4, 3), (3,), (3, 1), (1,)]
    start = [rng.normal(0, 1, s).astype(np.float32) for s in shapes]
    optimizer = keras_optimizer()
    variables = [keras.Variable(w) for w in start]
    weights = _tensors(start)
    slots = init_slots(name, weights)
    lr = tf.constant(float(optimizer.learning_rate.numpy()), tf.float32)
    for step in range(1, 6):
        grads = [rng.normal(0, 1, s).astype(np.float32) for s in shapes]
        optimizer.apply_gradients(zip(_tensors(grads), variables, strict=True))
        weights, slots = apply_gradients(
            name, weights, _tensors(grads), slots, lr, tf.constant(float(step))
        )
        for ours, theirs in zip(weights, variables, strict=True):
            np.testing.assert_allclose(ours.numpy(), np.asarray(theirs), rtol=1e-6, atol=1e-6)
    moved = max(np.abs(w.numpy() - s).max() for w, s in zip(weights, start, strict=True))
    assert moved > 0.02


# --- the post, reproduced -------------------------------------------------------------------
