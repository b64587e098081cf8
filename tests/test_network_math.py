"""The network's math: inner-tape derivatives, the stacked forward pass, padding into slots,
optimizer rules per slot. Checked against closed forms, central differences and Keras.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import per_slot, stacked
from helpers import tensors as _tensors

from pipeline.core.data import Dataset
from pipeline.core.layout import Layout, pack, unpack
from pipeline.core.losses import forward, slot_losses, value_and_slope
from pipeline.core.model import build_model, initial_weights, seeded_weights
from pipeline.core.optimizers import apply_gradients, init_moments
from pipeline.settings import ACTIVATIONS

# --- the math -------------------------------------------------------------------------------

# One hidden layer with known weights: f(x) = sum_i w2_i act(w1_i x + b1_i) + b2.
W1 = np.array([[0.5, -1.2, 2.0, 0.9]])
B1 = np.array([0.1, 0.3, -0.7, 0.0])
W2 = np.array([[1.5], [-0.4], [0.8], [-1.1]])
B2 = np.array([0.2])
KNOWN = [W1, B1, W2, B2]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


ANALYTIC = {  # activation: (act, act')
    "sigmoid": (_sigmoid, lambda z: _sigmoid(z) * (1.0 - _sigmoid(z))),
    "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
    "softplus": (lambda z: np.log1p(np.exp(z)), _sigmoid),
}
# A layout larger than every network below, switching between all activations.
WIDE = Layout(depth=4, width=12, activations=ACTIVATIONS, optimizers=("sgd", "adam"))


@pytest.mark.parametrize("activation", sorted(ANALYTIC))
def test_inner_tape_slope_equals_analytic_derivative(dataset: Dataset, activation: str) -> None:
    act, act_prime = ANALYTIC[activation]
    x = np.concatenate([dataset.x_train, dataset.x_val]).astype(np.float64)
    z = x @ W1 + B1
    f_exact = act(z) @ W2 + B2
    df_exact = (act_prime(z) * W1) @ W2  # f'(x) = sum_i w2_i w1_i act'(w1_i x + b1_i)

    for layout in (Layout.exact([4], activation, "sgd"), WIDE):
        weights, net = stacked([KNOWN], [activation], layout)
        f, df = value_and_slope(weights, *net, per_slot(x, 1), layout.activations)
        np.testing.assert_allclose(f.numpy()[0], f_exact, atol=1e-5)
        np.testing.assert_allclose(df.numpy()[0], df_exact, atol=1e-5)
    assert np.ptp(df_exact) > 0.1  # a slope that varies, so the comparison means something


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_inner_tape_slope_equals_central_differences_deep(activation: str) -> None:
    # float64 throughout, so central differences are accurate to ~1e-9.
    rng = np.random.default_rng(7)
    widths = [1, 8, 6, 5, 1]
    weights = []
    for a, b in itertools.pairwise(widths):
        weights += [rng.normal(0, 1, (a, b)), rng.normal(0, 0.5, (b,))]
    w, net = stacked([weights], [activation], WIDE, tf.float64)
    x = np.linspace(0.13, 1.87, 23).reshape(-1, 1)
    h = 1e-6
    f_plus = forward(w, *net, per_slot(x + h, 1, tf.float64), WIDE.activations).numpy()
    f_minus = forward(w, *net, per_slot(x - h, 1, tf.float64), WIDE.activations).numpy()
    _, df = value_and_slope(w, *net, per_slot(x, 1, tf.float64), WIDE.activations)
    np.testing.assert_allclose(df.numpy(), (f_plus - f_minus) / (2 * h), atol=1e-6)


def test_each_slot_computes_its_own_keras_model(dataset: Dataset) -> None:
    """Slots of different depth, width and activation in one layout: each is its Keras model."""
    models = []
    for i, activation in enumerate(ACTIVATIONS):
        hidden = [(7, 5, 3), (12,), (4, 12, 6, 2), (9, 9)][i % 4]
        model = build_model(hidden, activation, seed=i)
        model.layers[-1].bias.assign([0.25 * i])  # non-zero biases, so they are tested too
        model.layers[0].bias.assign(np.linspace(-1, 1, hidden[0]))
        models.append(model)
    weights, net = stacked([initial_weights(m) for m in models], ACTIVATIONS, WIDE)
    got = forward(weights, *net, per_slot(dataset.x_val, len(models)), WIDE.activations).numpy()
    for slot, model in enumerate(models):
        expected = np.asarray(model(dataset.x_val))
        np.testing.assert_allclose(got[slot], expected, rtol=1e-6, atol=1e-6)


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


def test_padding_gets_no_gradient_and_unpacks_to_the_network(dataset: Dataset) -> None:
    model = build_model([6, 9], "tanh", seed=5)
    model.layers[0].bias.assign(np.linspace(-0.5, 0.5, 6))
    weights = initial_weights(model)
    packed = pack(WIDE, weights, "tanh")
    assert [p.shape for p in packed.weights] == [s[1:] for s in WIDE.shapes(1)]
    assert packed.active.tolist() == [1.0, 0.0, 0.0]
    assert all(
        np.array_equal(u, w) for u, w in zip(unpack(packed.weights, (6, 9)), weights, strict=True)
    )

    x = np.concatenate([dataset.x_train, [[1.0]]])
    w, net = stacked([weights], ["tanh"], WIDE)
    with tf.GradientTape() as tape:
        tape.watch(w)
        f, df = value_and_slope(w, *net, per_slot(x, 1), WIDE.activations)
        loss = slot_losses(f, df, dataset.y_train, dataset.dy_train, 0.0, tf.ones((1, 3)))
    grads = tape.gradient(loss, w, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    # Padded entries and layers no slot uses receive no gradient (through the inner tape too),
    # so training leaves them 0; the network's own entries all move.
    for grad, mask in zip(grads, _kernel_and_bias_masks(packed), strict=True):
        assert np.all(grad.numpy()[0][mask == 0] == 0.0)
        assert np.all(grad.numpy()[0][mask == 1] != 0.0)


def _kernel_and_bias_masks(packed) -> list[np.ndarray]:
    m_in, m_hidden, m_out = packed.masks
    return [m_in, m_in[0], m_hidden, m_hidden.max(axis=1), m_out, np.ones(1)]


@pytest.mark.parametrize(
    ("name", "keras_optimizer"),
    [
        ("sgd", lambda: keras.optimizers.SGD(learning_rate=0.1)),
        ("adam", lambda: keras.optimizers.Adam(learning_rate=0.01)),
    ],
)
def test_apply_gradients_matches_keras_optimizer_per_slot(
    name: str, keras_optimizer: Callable[[], keras.optimizers.Optimizer]
) -> None:
    """Slot 0 follows `name`, slot 1 the other rule, slot 2 is frozen: each exactly."""
    rng = np.random.default_rng(11)
    shapes = [(3, 1, 4), (3, 4), (3, 4, 3), (3, 3), (3, 3, 1), (3, 1)]
    start = [rng.normal(0, 1, s).astype(np.float32) for s in shapes]
    optimizer = keras_optimizer()
    variables = [keras.Variable(w[0]) for w in start]
    weights = _tensors(start)
    moments = init_moments(weights)
    lr = float(optimizer.learning_rate.numpy())
    use_adam = tf.constant([name == "adam", name != "adam", True])
    update = tf.constant([True, True, False])
    for step in range(1, 6):
        grads = [rng.normal(0, 1, s).astype(np.float32) for s in shapes]
        optimizer.apply_gradients(zip(_tensors([g[0] for g in grads]), variables, strict=True))
        rates, steps = tf.constant([lr] * 3), tf.constant([float(step)] * 3)
        weights, moments = apply_gradients(
            weights, _tensors(grads), moments, rates, steps, use_adam, update
        )
        for ours, theirs in zip(weights, variables, strict=True):
            np.testing.assert_allclose(ours.numpy()[0], np.asarray(theirs), rtol=1e-6, atol=1e-6)
    moved = [
        max(np.abs(w.numpy()[k] - s[k]).max() for w, s in zip(weights, start, strict=True))
        for k in range(3)
    ]
    assert moved[0] > 0.02 and moved[1] > 0.02 and moved[2] == 0.0
    other = [w.numpy()[1] for w in weights]
    assert not all(np.allclose(a, np.asarray(b)) for a, b in zip(other, variables, strict=True))
