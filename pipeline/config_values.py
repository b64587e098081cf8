"""Where the config lives, the one-line config error and the readers of single values.

Every reader names the full key users type (`train.epochs`), the value and what is allowed, so
an entry point can print the error as it is and exit 2. Shared by `pipeline.settings` and the
sections with readers of their own (the search space, the study).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# The Hydra config directory: the only definition of where it is. In a checkout `pipeline/conf`
# is a symlink to the repository's `conf/`; a wheel holds the files themselves there.
CONF_DIR = Path(__file__).resolve().parent / "conf"


class ConfigError(ValueError):
    """A config value users typed is not allowed: names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"{key}={value}: {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


def required(section: Mapping[str, Any], prefix: str, key: str) -> tuple[str, Any]:
    """The full key `prefix.key` and its value, which must be given (not missing, not null)."""
    if key not in section or section[key] is None:
        raise ConfigError(f"{prefix}.{key}", None, "a value is required")
    return f"{prefix}.{key}", section[key]


def read_int(section: Mapping[str, Any], prefix: str, key: str, minimum: int | None = None) -> int:
    """An integer, optionally at least `minimum`."""
    name, value = required(section, prefix, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, value, "must be an integer")
    if minimum is not None and value < minimum:
        raise ConfigError(name, value, f"must be an integer >= {minimum}")
    return value


def read_float(section: Mapping[str, Any], prefix: str, key: str, positive: bool = False) -> float:
    """A finite number, optionally > 0."""
    name, value = required(section, prefix, key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(name, value, "must be a finite number")
    if positive and value <= 0:
        raise ConfigError(name, value, "must be a number > 0")
    return float(value)


def read_choice(section: Mapping[str, Any], prefix: str, key: str, allowed: tuple[str, ...]) -> str:
    """One of `allowed`."""
    name, value = required(section, prefix, key)
    if value not in allowed:
        raise ConfigError(name, value, f"must be one of {', '.join(allowed)}")
    return str(value)


def read_bool(section: Mapping[str, Any], prefix: str, key: str) -> bool:
    """true or false."""
    name, value = required(section, prefix, key)
    if not isinstance(value, bool):
        raise ConfigError(name, value, "must be true or false")
    return value
