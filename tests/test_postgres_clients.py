"""The README's multi-machine recipe, verbatim, on plain `postgresql://` URLs and real clients.

A fresh install has psycopg 3 only (what SQLAlchemy 2.1 picks for `postgresql://`), so every
process here runs with psycopg2 made unimportable: `mlflow server --backend-store-uri
postgresql://…`, a sweep on `study.storage=postgresql://…` with `tracking.uri=http://…`, and a
user's `optuna.load_study(storage="postgresql://…")`. The sweep's output must be the project's
own lines (none of MLflow's "View run" links), and the registered best model must load through
the server. Without PostgreSQL these skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pg
import pytest
import servers
import sweeps

REPO_ROOT = Path(__file__).resolve().parents[1]
ONE_GRAPH = ["search.activation=[tanh]", "search.optimizer=[adam]", "search.n_layers.high=1"]
N_TRIALS = 2
BLOCKER = "raise ImportError('psycopg2 is blocked: a fresh install has psycopg 3 only')\n"


def test_declared_driver_is_the_one_sqlalchemy_picks_for_plain_urls() -> None:
    from sqlalchemy.engine import make_url

    driver = make_url("postgresql://host/db").get_dialect().driver
    assert driver == "psycopg"  # SQLAlchemy 2.1's default: psycopg 3
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    names = [d.split(">")[0].split("=")[0].split("<")[0].strip() for d in project["dependencies"]]
    assert "psycopg[binary]" in names
    assert not [n for n in names if n.startswith("psycopg2")]


@dataclass(frozen=True)
class Swept:
    env: dict[str, str]
    server: servers.MlflowServer
    storage: str
    name: str
    result: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swept]:
    """A server and a sweep on plain PostgreSQL URLs, psycopg2 blocked in every process."""
    pg.require_postgres()
    root = tmp_path_factory.mktemp("plain-postgres")
    (root / "blocked" / "psycopg2").mkdir(parents=True)
    (root / "blocked" / "psycopg2" / "__init__.py").write_text(BLOCKER)
    path = [str(root / "blocked"), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    env = sweeps.sweep_env(PYTHONPATH=os.pathsep.join(p for p in path if p))
    with servers.mlflow_server(root, env) as (_, server), pg.database() as storage_db:
        storage, name = pg.url(storage_db), f"plain-{secrets.token_hex(3)}"
        overrides = [*sweeps.SMALL, *ONE_GRAPH, f"study.n_trials={N_TRIALS}", f"study.name={name}"]
        overrides += [f"study.storage={storage}", f"tracking.uri={server.uri}"]
        (root / "sweep").mkdir()
        result = subprocess.run(
            [*sweeps.SWEEP, *overrides],
            cwd=root / "sweep",
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        yield Swept(env, server, storage, name, result)


@pytest.mark.slow
@pytest.mark.postgres
def test_the_recipe_runs_on_plain_urls_without_psycopg2(swept: Swept) -> None:
    assert swept.result.returncode == 0, swept.result.stdout[-2000:] + swept.result.stderr[-2000:]
    sweeps.assert_books(swept.storage, swept.server.uri, swept.name, N_TRIALS)


@pytest.mark.slow
@pytest.mark.postgres
def test_sweep_output_is_the_projects_own_lines(swept: Swept) -> None:
    output = swept.result.stdout + swept.result.stderr
    assert f"{swept.name} #0 " in output and "Compare the runs:" in output
    for noise in ("View run", "View experiment", "🏃", "🧪"):
        assert noise not in output, output[-2000:]


@pytest.mark.slow
@pytest.mark.postgres
def test_optuna_load_study_in_a_notebook_takes_the_plain_url(swept: Swept) -> None:
    notebook = (
        "import optuna\n"
        f"study = optuna.load_study(study_name={swept.name!r}, storage={swept.storage!r})\n"
        "print(len(study.trials), study.metric_names)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", notebook], env=swept.env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(N_TRIALS), "['val_value_mse']"]


@pytest.mark.slow
@pytest.mark.postgres
def test_best_model_loads_from_the_registry_through_the_server(swept: Swept) -> None:
    import mlflow

    from pipeline.core.data import make_dataset
    from pipeline.core.problem_config import shipped
    from pipeline.defaults import load

    study = sweeps.load_study(swept.storage, swept.name)
    mlflow.set_tracking_uri(swept.server.uri)
    model = mlflow.pyfunc.load_model(f"models:/{swept.name}@best")
    data = make_dataset(load("train").data, shipped("log"), 1.0)
    predicted = np.asarray(model.predict(data.x_val.reshape(-1, 1))).ravel()
    mse = float(np.mean((predicted - np.ravel(data.y_val)) ** 2))
    assert mse == pytest.approx(study.best_value, rel=1e-3)
    version = mlflow.MlflowClient().get_model_version_by_alias(swept.name, "best")
    best_run = sweeps.trial_run(mlflow.MlflowClient(), study, study.best_trial.number)
    assert version.run_id == best_run.info.run_id
