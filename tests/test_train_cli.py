"""`python -m pipeline.train` as users run it: one MLflow run with params, history, metrics, plots.

Subprocesses in a temporary directory (the default store is `sqlite:///mlruns/mlflow.db` under the
working directory); bad input exits 2 with one `error: key=value: ...` line and leaves no store.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from pipeline.names import REASON, ROLE_TAG

EPOCHS = 300
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _command(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.train", *overrides]


ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def run_train(cwd: Path, *overrides: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """`python -m pipeline.train <overrides>` in `cwd`, output captured."""
    return subprocess.run(
        _command(*overrides),
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def client_in(cwd: Path) -> MlflowClient:
    """A client on the default store that a run in `cwd` wrote."""
    return MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")


@dataclass(frozen=True)
class Finished:
    """A `pipeline.train` process that ran in `cwd`, with its output."""

    cwd: Path
    returncode: int
    stdout: str
    stderr: str


# Each case runs `pipeline.train` once in its own empty directory.
CASES = {
    "value": ["objective=value", f"train.epochs={EPOCHS}", "train.log_every=10"],
    "derivative": ["objective=derivative", f"train.epochs={EPOCHS}", "train.log_every=10"],
    "diverged": ["train.learning_rate=1e6", f"train.epochs={EPOCHS}"],
}


@pytest.fixture(scope="module")
def train_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Finished]:
    """Every case of CASES, run side by side (each process spends most of its ~10 s importing
    TensorFlow and creating the store, not training)."""
    started = {}
    for case, overrides in CASES.items():
        cwd = tmp_path_factory.mktemp(f"train-{case}")
        command = _command(*overrides)
        started[case] = (
            cwd,
            subprocess.Popen(
                command,
                cwd=cwd,
                env=ENV,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
    finished = {}
    for case, (cwd, process) in started.items():
        stdout, stderr = process.communicate(timeout=300)
        finished[case] = Finished(cwd, process.returncode, stdout, stderr)
    return finished


def only_run(done: Finished) -> tuple[MlflowClient, Run]:
    """The client on the store a finished process wrote, and the one run in it."""
    assert done.returncode == 0, done.stderr
    client = client_in(done.cwd)
    experiment = client.get_experiment_by_name("pipeline")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


@pytest.fixture(scope="module", params=["value", "derivative"])
def trained(
    request: pytest.FixtureRequest, train_runs: dict[str, Finished]
) -> tuple[str, Path, Finished, MlflowClient, Run]:
    """(objective, cwd, process, client, the one run it wrote) per objective."""
    objective: str = request.param
    done = train_runs[objective]
    client, run = only_run(done)
    return objective, done.cwd, done, client, run


def test_run_is_finished_and_tagged(trained: tuple) -> None:
    objective, _, done, _, run = trained
    assert run.info.status == "FINISHED"
    assert run.data.tags[ROLE_TAG] == "run"
    assert run.data.tags["pipeline.objective"] == objective
    assert run.info.run_id in done.stdout
    assert "Traceback" not in done.stderr


def test_run_carries_the_uniform_params(trained: tuple) -> None:
    objective, _, _, _, run = trained
    params = run.data.params
    expected = {
        "n_layers": "2",
        "hidden": "[10, 10]",
        "n_params": str((1 * 10 + 10) + (10 * 10 + 10) + (10 * 1 + 1)),
        "activation": "sigmoid",
        "optimizer": "sgd",
        "learning_rate": "0.1",
        "epochs": str(EPOCHS),
        "seed": "0",
        "objective": objective,
    }
    assert {k: params.get(k) for k in expected} == expected
    if objective == "derivative":
        assert float(params["anchor_weight"]) == 1.0 and float(params["anchor_x"]) == 1.0


def test_loss_history_has_epoch_steps(trained: tuple) -> None:
    _, _, _, client, run = trained
    history = sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)
    steps = [m.step for m in history]
    assert steps == [1, *range(10, EPOCHS + 1, 10)]  # train.log_every = 10
    losses = [m.value for m in history]
    assert all(v == v and 0 <= v < float("inf") for v in losses)
    assert losses[-1] < losses[0]


def test_final_metrics_are_logged(trained: tuple) -> None:
    objective, _, _, client, run = trained
    metrics = run.data.metrics
    for key in ("val_value_mse", "val_deriv_mse", "objective_value"):
        assert key in metrics and 0 <= metrics[key] < float("inf"), key
    own = "val_value_mse" if objective == "value" else "val_deriv_mse"
    assert metrics["objective_value"] == metrics[own]
    (final,) = client.get_metric_history(run.info.run_id, "objective_value")
    assert final.step == EPOCHS  # one value, at the last epoch


def test_plots_are_valid_pngs(trained: tuple, tmp_path: Path) -> None:
    _, _, _, client, run = trained
    names = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"fit.png", "derivative.png", "loss.png"} <= names
    for name in ("fit.png", "derivative.png", "loss.png"):
        local = Path(client.download_artifacts(run.info.run_id, f"plots/{name}", str(tmp_path)))
        data = local.read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert width >= 100 and height >= 100, (name, width, height)


def test_diverged_run_is_recorded_as_failed_at_that_epoch(
    train_runs: dict[str, Finished],
) -> None:
    done = train_runs["diverged"]
    client, run = only_run(done)
    assert run.info.status == "FAILED"
    epochs_run = int(run.data.metrics["epochs_run"])
    assert 1 < epochs_run < EPOCHS  # SGD at lr 1e6 overflows within a few epochs
    assert run.data.tags[REASON] == f"non-finite loss at epoch {epochs_run}"
    assert f"non-finite loss at epoch {epochs_run}" in done.stdout
    history = sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)
    assert history[-1].step == epochs_run  # nothing logged past the divergence
    assert all(0 < m.value < 1e300 for m in history[:-1])
    assert history[-1].value > 1e300  # MLflow stores +inf as the largest float
    assert "Traceback" not in done.stderr


# (override, key named in the error): input `pipeline.train` refuses before doing any work.
BAD_INPUTS = [
    ("model.activation=swish2", "model.activation"),
    ("train.optimizer=rmsprop", "train.optimizer"),
    ("data.x_min=0", "data.x_min"),
    ("data.x_max=0.05", "data.x_max"),
    ("data.n_train=1", "data.n_train"),
    ("train.epochs=0", "train.epochs"),
    ("model.hidden=[]", "model.hidden"),
    ("train.learning_rate=-1", "train.learning_rate"),
    ("objective=both", "objective"),
]


@pytest.mark.parametrize(("override", "key"), BAD_INPUTS)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, override: str, key: str) -> None:
    done = run_train(tmp_path, override)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert re.fullmatch(rf"error: {re.escape(key)}=\S.*: .+", lines[0]), lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "mlruns").exists()


def test_unknown_objective_option_fails_cleanly(tmp_path: Path) -> None:
    # `objective=foo` names a config-group option that does not exist: Hydra itself refuses it
    # (exit 1) and lists the options, before any of our code runs.
    done = run_train(tmp_path, "objective=foo")
    assert done.returncode != 0
    assert "objective/foo" in done.stderr and "derivative" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "mlruns").exists()
