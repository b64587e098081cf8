"""The data a problem gives (`core.data`): the post's points, collocation points fixed or
resampled, and the validation grid kept apart from them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pipeline.core.data import make_dataset
from pipeline.core.problem_config import shipped
from pipeline.defaults import load
from pipeline.settings import ConfigError

DATA = load("train").data  # the shipped data settings (conf/data/default.yaml)


def test_the_post_data_points_are_unchanged() -> None:
    data = make_dataset(DATA, shipped("log"), 1.0)
    np.testing.assert_allclose(data.x_train.ravel(), np.arange(0.1, 2.0, 0.1), rtol=1e-6)
    np.testing.assert_allclose(data.y_train, np.log(data.x_train), rtol=1e-6)


def test_fixed_collocation_is_the_grid_every_chunk() -> None:
    data = make_dataset(replace(DATA, n_colloc=64), shipped("sin"), 0.0)
    for chunk in (0, 1, 7):
        x, y, dy = data.collocation(chunk)
        assert x is data.x_colloc and y is data.y_colloc and dy is data.dy_colloc


def test_resampled_collocation_changes_stays_in_the_domain_and_repeats_with_the_seed() -> None:
    cfg = replace(DATA, x_min=-1.0, x_max=1.0, n_colloc=64, resample=True)
    runge = shipped("runge")
    data, again = make_dataset(cfg, runge, 0.0, seed=3), make_dataset(cfg, runge, 0.0, seed=3)
    other_seed = make_dataset(cfg, runge, 0.0, seed=4)
    chunks = [data.collocation(k) for k in range(4)]
    for k, (x, y, dy) in enumerate(chunks):
        assert x.shape == y.shape == dy.shape == (64, 1) and x.dtype == np.float32
        assert x.min() >= -1.0 and x.max() <= 1.0
        np.testing.assert_allclose(y, runge.f(x.astype(np.float64)), rtol=1e-6)
        np.testing.assert_allclose(dy, runge.df(x.astype(np.float64)), rtol=1e-6, atol=1e-7)
        for a, b in zip((x, y, dy), again.collocation(k), strict=True):
            np.testing.assert_array_equal(a, b)  # the same seed: the same points
        assert not np.array_equal(x, other_seed.collocation(k)[0])
    assert all(not np.array_equal(chunks[0][0], c[0]) for c in chunks[1:])
    assert not np.array_equal(chunks[0][0], data.x_colloc)
    xs = np.concatenate([c[0] for c in chunks]).ravel()
    assert xs.min() < -0.9 and xs.max() > 0.9  # uniform over the whole domain


def test_a_collocation_grid_on_the_validation_midpoints_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        make_dataset(replace(DATA, n_colloc=201), shipped("log"), 1.0)
    assert caught.value.key == "data.n_colloc" and "202" in str(caught.value)
