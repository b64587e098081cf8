"""The learning-rate schedule (`train.lr_decay`): its values per epoch, and a decayed run that
matches Keras `model.fit` given the same rates, step for step.
"""

from __future__ import annotations

from dataclasses import replace

import keras
import numpy as np
import pytest
from helpers import keras_fit, train_spec
from keras.optimizers import SGD

from pipeline.core.data import Dataset
from pipeline.core.model import build_model, initial_weights
from pipeline.core.optimizers import learning_rates
from pipeline.core.trainer import train
from pipeline.settings import CONSTANT_RATE, LrDecay

KERAS_EPOCHS = 100  # model.fit costs ~20-55 ms per epoch


def test_learning_rates_hold_then_fall_along_a_half_cosine() -> None:
    decay = LrDecay(fraction=0.3, final=0.01)
    rates = learning_rates(0.2, decay, 1000, 1, 1000)
    assert (rates[:700] == np.float32(0.2)).all()  # epochs 1..700 keep the rate exactly
    assert (np.diff(rates[699:]) < 0).all()
    assert rates[849] == pytest.approx(0.2 * (0.01 + 0.99 * 0.5))  # epoch 850: half way down
    assert rates[-1] == pytest.approx(0.2 * 0.01)  # the last epoch: final x the rate
    chunks = [learning_rates(0.2, decay, 1000, first, 300) for first in (1, 301, 601, 901)]
    np.testing.assert_array_equal(np.concatenate(chunks)[:1000], rates)
    assert (learning_rates(0.2, CONSTANT_RATE, 1000, 1, 1000) == np.float32(0.2)).all()


class _Rates(keras.optimizers.schedules.LearningRateSchedule):
    """Keras's schedule holding our rates: optimizer iteration i (0-based) is epoch i + 1."""

    def __init__(self, rates: np.ndarray) -> None:
        self.rates = keras.ops.convert_to_tensor(rates)

    def __call__(self, step):
        return keras.ops.take(self.rates, step)


def test_decayed_rate_matches_keras_model_fit_with_the_same_schedule(dataset: Dataset) -> None:
    decay = LrDecay(fraction=0.6, final=0.05)
    model = build_model([10, 10], "sigmoid", seed=0)
    start = initial_weights(model)
    spec = train_spec(
        "sigmoid", "sgd", 0.5, KERAS_EPOCHS, lr_decay=decay, log_every=1, report_every=KERAS_EPOCHS
    )
    ours = train(spec, start, dataset)
    constant = train(replace(spec, lr_decay=CONSTANT_RATE), start, dataset)

    rates = learning_rates(0.5, decay, KERAS_EPOCHS, 1, KERAS_EPOCHS)
    keras_loss = keras_fit(model, dataset, SGD(learning_rate=_Rates(rates)), KERAS_EPOCHS)
    np.testing.assert_allclose(ours.history_loss, keras_loss, rtol=1e-3)
    for got, expected in zip(ours.weights, model.get_weights(), strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-4)
    # The schedule changed the run: the same start at a constant rate ends elsewhere.
    assert not np.allclose(ours.history_loss[-10:], constant.history_loss[-10:], rtol=1e-3)
