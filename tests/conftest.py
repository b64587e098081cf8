"""Shared fixtures: the repository's config directory, a Hydra compose helper and the post's data.

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
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from pipeline.core.data import Dataset, make_dataset
from pipeline.core.problems import shipped
from pipeline.settings import DataConfig

if TYPE_CHECKING:
    import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"

ComposeFn = Callable[..., DictConfig]


def compose_config(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The config `python -m pipeline.<config_name> <overrides>` would see (Hydra-composed)."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="tests"):
        return compose(config_name=config_name, overrides=list(overrides))


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
    return make_dataset(DataConfig(), shipped("log"), anchor_x=1.0)


@pytest.fixture(scope="session")
def post_weights() -> list[np.ndarray]:
    """The post's network's initial weights (seed 0): [10, 10] sigmoid. Don't mutate them."""
    from pipeline.core.model import build_model, initial_weights

    return initial_weights(build_model([10, 10], "sigmoid", seed=0))
