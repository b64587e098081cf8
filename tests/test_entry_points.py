"""The commands as a new user meets them: their own `--help`, and keys a sweep refuses.

Subprocesses in an empty temporary directory (no TensorFlow is imported on these paths).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pipeline.config_values import CONF_DIR
from pipeline.settings import ConfigError


def _run(cwd: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"pipeline.{module}", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _groups(config_name: str) -> set[str]:
    """The config groups the app's defaults list selects (what its help must list)."""
    defaults = OmegaConf.load(CONF_DIR / f"{config_name}.yaml")["defaults"]
    return {next(iter(e)) for e in defaults if not isinstance(e, str)} - {
        "override hydra/job_logging"
    }


def _listed_groups(help_text: str) -> set[str]:
    section = help_text.split("== Config groups", 1)[1].split("==\n", 1)[1].split("\n\n", 1)[0]
    return {line.split(":", 1)[0] for line in section.splitlines() if ":" in line}


@pytest.mark.parametrize(
    ("module", "says", "unused"),
    [
        ("sweep", "Optuna studies over network architecture", {"model"}),
        ("train", "One run of one configuration", {"search", "study"}),
    ],
)
def test_help_is_the_apps_own(tmp_path: Path, module: str, says: str, unused: set[str]) -> None:
    done = _run(tmp_path, module, "--help")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.startswith(f"python -m pipeline.{module} [key=value ...]\n")
    assert says in text
    assert "powered by Hydra" not in text  # not Hydra's generic page
    keys = text.split("Keys people change most", 1)[1].split("Where results go", 1)[0]
    examples = re.findall(r"^  ([a-z_.+]+)=(\S+)", keys, flags=re.MULTILINE)
    assert len(examples) >= 6, keys
    assert "mlruns/mlflow.db" in text.split("Where results go", 1)[1]
    # The groups it lists are exactly the ones this app composes, above the full config.
    assert _listed_groups(text) == _groups(module)
    assert not unused & _listed_groups(text)
    assert text.index("== Config groups") < text.index("== Config (")
    assert "\ntracking:\n  uri: sqlite:///mlruns/mlflow.db" in text  # the composed config
    assert not (tmp_path / "mlruns").exists()


def test_sweep_help_points_at_the_studies_and_the_best_model(tmp_path: Path) -> None:
    text = _run(tmp_path, "sweep", "--help").stdout
    results = text.split("Where results go", 1)[1].split("==", 1)[0]
    assert "mlruns/optuna.journal" in results
    assert "python -m pipeline.ui --optuna" in results
    assert 'mlflow.pyfunc.load_model("models:/log-value@best")' in results


@pytest.mark.parametrize(
    ("override", "key", "search_key"),
    [
        ("train.optimizer=adam", "train.optimizer", "search.optimizer"),
        ("train.learning_rate=0.5", "train.learning_rate", "search.learning_rate"),
        ("++train.learning_rate=0.5", "train.learning_rate", "search.learning_rate"),
        ("train=default", "train.optimizer", "search.optimizer"),  # the train group's values
    ],
)
def test_sweep_refuses_train_keys_it_would_ignore(
    tmp_path: Path, override: str, key: str, search_key: str
) -> None:
    done = _run(tmp_path, "sweep", "objective=value", override)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {key}=")
    assert f"set {search_key} instead" in lines[0]
    assert not (tmp_path / "mlruns").exists(), "nothing is written"


def test_sweep_settings_keep_epochs_seed_and_log_every() -> None:
    from pipeline.sweep import read_sweep_train

    section = {"epochs": 7, "seed": 3, "log_every": 5, "optimizer": None, "learning_rate": None}
    section["lr_decay"] = {"fraction": 0.4, "final": 0.1}
    train = read_sweep_train(section)
    assert (train.epochs, train.seed, train.log_every) == (7, 3, 5)
    assert (train.lr_decay.fraction, train.lr_decay.final) == (0.4, 0.1)
    with pytest.raises(ConfigError) as caught:
        read_sweep_train({**section, "optimizer": "sgd"})
    assert caught.value.key == "train.optimizer"


@pytest.mark.parametrize("optuna", [False, True], ids=["mlflow", "optuna-dashboard"])
def test_ui_on_a_busy_port_says_so_in_one_line(tmp_path: Path, optuna: bool) -> None:
    import socket

    (tmp_path / "mlruns").mkdir()
    (tmp_path / "mlruns" / "mlflow.db").touch()  # a store to serve, so the port is what fails
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(tmp_path, "ui", "--port", str(port), *(["--optuna"] if optuna else []))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == f"error: port {port} is in use (--port N)"
