"""Shared fixtures: the config directory, the one Hydra compose helper and the post's data.

Settings come from the shipped config (`pipeline.config_values.CONF_DIR`), never from values written
again here: `compose_cfg` gives the composed `DictConfig`, `pipeline.defaults.load` the typed
settings an entry point would run with.

TensorFlow is imported lazily (by the fixtures and tests that need it), so config-only tests
stay fast. Add fixtures for other concerns below the existing ones.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from omegaconf import DictConfig

from pipeline import defaults
from pipeline.config_values import CONF_DIR
from pipeline.core.data import Dataset, make_dataset
from pipeline.core.problem_config import shipped

if TYPE_CHECKING:
    import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]

ComposeFn = Callable[[str, Sequence[str]], DictConfig]
compose_config: ComposeFn = defaults.compose  # `python -m pipeline.<name> <overrides>`'s config


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (where `conf/` and `pipeline/` live)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def conf_dir() -> Path:
    """The Hydra config directory."""
    return CONF_DIR


@pytest.fixture(scope="session")
def compose_cfg() -> ComposeFn:
    """`compose_cfg("train", ["train.epochs=5"])`: compose a primary config with overrides."""
    return compose_config


@pytest.fixture(scope="session")
def train_cfg() -> DictConfig:
    """The default `train` config, composed once (read-only: compose your own to change it)."""
    return compose_config("train")


@pytest.fixture(scope="session")
def dataset() -> Dataset:
    """The post's problem (log x): 19 data points on [0.1, 1.9], the collocation grid, the
    held-out validation grid and the anchor x0 = 1."""
    run = defaults.load("train")
    return make_dataset(run.data, shipped("log"), anchor_x=run.objective.anchor_x)


@pytest.fixture(scope="session")
def post_weights() -> list[np.ndarray]:
    """The post's network's initial weights (seed 0): [10, 10] sigmoid. Don't mutate them."""
    from pipeline.core.model import build_model, initial_weights

    return initial_weights(build_model([10, 10], "sigmoid", seed=0))
