"""The sweep end to end: what Optuna and MLflow hold after `python -m pipeline.sweep`.

Sweeps run in-process (Hydra-composed config -> `read_settings` -> `run_sweep`) in a temporary
directory, with tiny epochs. Both stores are read back independently: MLflow through its client
on the SQLite file, Optuna through a fresh `JournalStorage` on the journal file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from contract import UNIFORM_PARAMS
from hydra import compose, initialize_config_dir
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from pipeline.config import ConfigError
from pipeline.settings import SweepSettings
from pipeline.study import make_sampler, read_study

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"
EXPERIMENT = "pipeline"
RUN_PLOTS = {"plots/fit.png", "plots/derivative.png", "plots/loss.png"}
# One depth, activation and optimizer: every trial of these tests reuses one compiled graph.
NARROW_SPACE = ("search.activation=[tanh]", "search.optimizer=[adam]", "search.n_layers.high=1")
# Narrow too, but holding the post's network (so the baseline is enqueued): one graph per study.
BASELINE_SPACE = (
    "search.activation=[sigmoid]",
    "search.optimizer=[sgd]",
    "search.n_layers.low=2",
    "search.n_layers.high=2",
)


def store_overrides(root: Path) -> list[str]:
    """Absolute store locations under `root` (MLflow caches stores per URI: never share one)."""
    return [
        f"tracking.uri=sqlite:///{root / 'mlruns' / 'mlflow.db'}",
        f"study.storage={root / 'mlruns' / 'optuna.journal'}",
    ]


def settings_for(overrides: Sequence[str]) -> SweepSettings:
    """What `python -m pipeline.sweep <overrides>` would run with."""
    from pipeline.sweep import read_settings

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="sweep"):
        return read_settings(compose(config_name="sweep", overrides=list(overrides)))


def run_sweep_in(root: Path, overrides: Sequence[str], log_model: bool = True) -> int:
    """Run a sweep with `root` as working directory and stores; return its exit code.

    `log_model=False` skips only MLflow's Keras model logging (seconds per study, spent in a
    subprocess that infers pip requirements) for tests about other things.
    """
    from pipeline import tracking
    from pipeline.runner import run_sweep

    settings = settings_for([*store_overrides(root), *overrides])
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        if not log_model:
            patch.setattr(tracking, "log_keras_model", lambda client, run_id, model: None)
        return run_sweep(settings)


@dataclass
class Stores:
    """Both stores of one sweep directory, opened read-only-style for assertions."""

    root: Path

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(f"sqlite:///{self.root / 'mlruns' / 'mlflow.db'}")

    @property
    def storage(self) -> JournalStorage:
        return JournalStorage(JournalFileBackend(str(self.root / "mlruns" / "optuna.journal")))

    def experiment_id(self) -> str:
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        assert experiment is not None, "the sweep made no MLflow experiment"
        return experiment.experiment_id

    def study(self, name: str) -> optuna.Study:
        return optuna.load_study(study_name=name, storage=self.storage)

    def runs(self, filter_string: str = "") -> list[Run]:
        return self.client.search_runs(
            [self.experiment_id()], filter_string=filter_string, max_results=1000
        )

    def parents(self) -> list[Run]:
        return self.runs("tags.`pipeline.role` = 'study'")

    def children(self, parent_id: str) -> list[Run]:
        return self.runs(f"tags.`mlflow.parentRunId` = '{parent_id}'")


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    """Every file path (recursively) among a run's artifacts."""
    found = set()
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            found |= artifact_paths(client, run_id, info.path)
        else:
            found.add(info.path)
    return found


def trial_of(study: optuna.Study, run: Run) -> optuna.trial.FrozenTrial:
    number = int(run.data.tags["optuna.trial_number"])
    trial = study.trials[number]
    assert trial.number == number
    return trial


# ---------------------------------------------------------------------------------------------
# End to end: both objectives, default sampler and pruner, a few short trials. The space is
# narrowed to the baseline's depth, activation and optimizer to keep XLA compiles to one per
# study; the slow command-line test below runs the full default space.

E2E_TRIALS, E2E_EPOCHS = 3, 400


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Stores:
    root = tmp_path_factory.mktemp("sweep")
    overrides = [f"study.n_trials={E2E_TRIALS}", f"train.epochs={E2E_EPOCHS}"]
    code = run_sweep_in(root, [*overrides, "study.report_every=100", *BASELINE_SPACE])
    assert code == 0
    return Stores(root)


def test_one_experiment_holds_one_parent_run_per_study(swept: Stores) -> None:
    parents = swept.parents()
    by_objective = {p.data.tags["pipeline.objective"]: p for p in parents}
    assert len(parents) == 2 and set(by_objective) == {"value", "derivative"}
    studies = {s.study_name for s in swept.storage.get_all_studies()}
    assert studies == {"log-value", "log-derivative"}
    for objective, parent in by_objective.items():
        assert parent.data.tags["optuna.study_name"] == f"log-{objective}"
        assert parent.info.status == "FINISHED"
        study = swept.study(f"log-{objective}")
        assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id


def test_parent_run_records_the_best_trial_and_study_plots(swept: Stores) -> None:
    client = swept.client
    for parent in swept.parents():
        study = swept.study(parent.data.tags["optuna.study_name"])
        best = study.best_trial
        assert parent.data.metrics["best_value"] == pytest.approx(best.value, rel=1e-9)
        assert parent.data.tags["best_trial_number"] == str(best.number)
        best_run = client.get_run(parent.data.tags["best_run_id"])
        assert best_run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert best_run.data.tags["optuna.trial_number"] == str(best.number)
        plots = artifact_paths(client, parent.info.run_id)
        assert {"plots/optimization_history.png", "plots/parallel_coordinate.png"} <= plots
        varied = len({tuple(sorted(t.params.items())) for t in study.trials}) > 1
        if varied and len(study.get_trials(states=(TrialState.COMPLETE,))) >= 2:
            assert "plots/param_importances.png" in plots


def test_every_trial_is_a_child_run_mirroring_its_optuna_trial(swept: Stores) -> None:
    client = swept.client
    for parent in swept.parents():
        study = swept.study(parent.data.tags["optuna.study_name"])
        children = swept.children(parent.info.run_id)
        assert len(children) == len(study.trials) == E2E_TRIALS
        numbers = sorted(int(c.data.tags["optuna.trial_number"]) for c in children)
        assert numbers == list(range(E2E_TRIALS))
        for run in children:
            tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
            trial = trial_of(study, run)
            assert tags["pipeline.role"] == "trial"
            assert tags["pipeline.objective"] == parent.data.tags["pipeline.objective"]
            assert tags["optuna.study_name"] == study.study_name
            assert tags["optuna.state"] == trial.state.name
            assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
            assert run.info.status == "FINISHED"
            assert set(UNIFORM_PARAMS) <= set(params)
            assert params["epochs"] == str(E2E_EPOCHS)
            assert params["objective"] == parent.data.tags["pipeline.objective"]
            assert params["n_layers"] == str(trial.params["n_layers"])
            hidden = [trial.params[f"units_l{i}"] for i in range(trial.params["n_layers"])]
            assert params["hidden"] == str(hidden)
            assert params["activation"] == trial.params["activation"]
            assert params["optimizer"] == trial.params["optimizer"]
            assert float(params["learning_rate"]) == pytest.approx(trial.params["learning_rate"])
            loss = client.get_metric_history(run.info.run_id, "loss")
            steps = sorted(m.step for m in loss)
            assert len(steps) > 2 and steps[-1] == E2E_EPOCHS == int(metrics["epochs_run"])
            for key in ("val_value_mse", "val_deriv_mse", "objective_value"):
                assert key in metrics
            own = "val_value_mse" if params["objective"] == "value" else "val_deriv_mse"
            assert metrics["objective_value"] == metrics[own]
            if trial.state == TrialState.COMPLETE:
                assert metrics["objective_value"] == pytest.approx(trial.value, rel=1e-9)
            assert artifact_paths(client, run.info.run_id) >= RUN_PLOTS


def test_baseline_is_trial_zero(swept: Stores) -> None:
    for summary in swept.storage.get_all_studies():
        trial = swept.study(summary.study_name).trials[0]
        assert trial.user_attrs.get("baseline") is True
        assert trial.params == {
            "n_layers": 2,
            "units_l0": 10,
            "units_l1": 10,
            "activation": "sigmoid",
            "optimizer": "sgd",
            "learning_rate": pytest.approx(0.1),
        }
        others = swept.study(summary.study_name).trials[1:]
        assert not any(t.user_attrs.get("baseline") for t in others)


def test_best_trial_run_carries_a_loadable_keras_model(swept: Stores) -> None:
    import mlflow
    import numpy as np

    client = swept.client
    parent = next(p for p in swept.parents() if p.data.tags["pipeline.objective"] == "value")
    best_run = parent.data.tags["best_run_id"]
    assert client.get_run(best_run).data.tags.get("pipeline.model") == "logged"
    models = client.search_logged_models(experiment_ids=[swept.experiment_id()])
    from_best = [m for m in models if m.source_run_id == best_run]
    assert len(from_best) == 1 and from_best[0].name == "model"
    others = {p.info.run_id for p in swept.children(parent.info.run_id)} - {best_run}
    assert not [m for m in models if m.source_run_id in others], "only the best run has a model"
    mlflow.set_tracking_uri(client.tracking_uri)
    model = mlflow.keras.load_model(from_best[0].model_uri)
    study = swept.study("log-value")
    units = [
        study.best_trial.params[f"units_l{i}"] for i in range(study.best_trial.params["n_layers"])
    ]
    assert [layer.units for layer in model.layers[:-1]] == units
    # The logged model is the trained one: its validation error is the run's objective value.
    from pipeline.config import DataConfig
    from pipeline.data import make_dataset

    data = make_dataset(DataConfig())
    predicted = np.asarray(model(data.x_val)).ravel()
    mse = float(np.mean((predicted - np.ravel(data.y_val)) ** 2))
    assert mse == pytest.approx(study.best_value, rel=1e-3)


# ---------------------------------------------------------------------------------------------
# Resume: `n_trials` is the study's total; a rerun never doubles and keeps the same parent run.


def test_rerun_adds_nothing_and_a_larger_n_trials_tops_up_under_the_same_parent(
    tmp_path: Path,
) -> None:
    common = ["objective=value", "train.epochs=300", "study.report_every=100", *NARROW_SPACE]
    stores = Stores(tmp_path)
    assert run_sweep_in(tmp_path, [*common, "study.n_trials=2"], log_model=False) == 0
    (parent,) = stores.parents()
    first_runs = {r.info.run_id for r in stores.children(parent.info.run_id)}
    assert len(first_runs) == len(stores.study("log-value").trials) == 2

    assert run_sweep_in(tmp_path, [*common, "study.n_trials=2"], log_model=False) == 0
    assert len(stores.study("log-value").trials) == 2
    assert {r.info.run_id for r in stores.runs()} == first_runs | {parent.info.run_id}

    assert run_sweep_in(tmp_path, [*common, "study.n_trials=4"], log_model=False) == 0
    study = stores.study("log-value")
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == 4
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    (same_parent,) = stores.parents()
    assert same_parent.info.run_id == parent.info.run_id
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    children = stores.children(parent.info.run_id)
    assert len(children) == 4 and first_runs < {r.info.run_id for r in children}
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in children) == [0, 1, 2, 3]
    assert same_parent.info.status == "FINISHED"
    assert same_parent.data.metrics["best_value"] == pytest.approx(study.best_value, rel=1e-9)


# ---------------------------------------------------------------------------------------------
# Pruning, samplers and pruners.


def test_median_pruner_prunes_and_the_run_says_so(tmp_path: Path) -> None:
    # SGD-only, lr up to the baseline's 0.1: later trials learn slower than trial 0 (the
    # baseline) at every report, so a median pruner with one startup trial must prune some.
    epochs = 400
    code = run_sweep_in(
        tmp_path,
        [
            "objective=value",
            f"train.epochs={epochs}",
            "study.report_every=100",
            "study.n_trials=4",
            "search.optimizer=[sgd]",
            "search.activation=[sigmoid]",
            "search.n_layers.low=2",
            "search.n_layers.high=2",
            "search.learning_rate.high=0.1",
            "search.learning_rate.low=1e-4",
            "+study.pruner.options={n_startup_trials: 1, n_warmup_steps: 0}",
        ],
        log_model=False,
    )
    assert code == 0
    stores = Stores(tmp_path)
    study = stores.study("log-value")
    assert study.trials[0].user_attrs.get("baseline") is True
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert pruned, [t.state.name for t in study.trials]
    client = stores.client
    for trial in pruned:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.data.tags["optuna.state"] == "PRUNED"
        assert run.data.tags["failure_reason"] == trial.user_attrs["failure_reason"]
        assert "pruned" in run.data.tags["failure_reason"]
        epochs_run = int(run.data.metrics["epochs_run"])
        assert epochs_run < epochs
        assert max(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == epochs_run
        assert run.info.status == "FINISHED"
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 4


@pytest.mark.parametrize(
    ("sampler", "pruner"),
    [
        ("tpe", "median"),
        ("random", "hyperband"),
        ("cmaes", "none"),
        ("qmc", "median"),
    ],
)
def test_every_sampler_and_pruner_runs_trials(tmp_path: Path, sampler: str, pruner: str) -> None:
    code = run_sweep_in(
        tmp_path,
        [
            "objective=value",
            "train.epochs=200",
            "study.report_every=100",
            "study.n_trials=2",
            f"study.sampler.name={sampler}",
            f"study.pruner.name={pruner}",
            *NARROW_SPACE,
        ],
        log_model=False,
    )
    assert code == 0
    stores = Stores(tmp_path)
    study = stores.study("log-value")
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 2
    assert not study.get_trials(states=(TrialState.FAIL,))
    sampler_class = {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "qmc": optuna.samplers.QMCSampler,
    }[sampler]
    assert isinstance(
        make_sampler(settings_for([f"study.sampler.name={sampler}"]).study), sampler_class
    )
    (parent,) = stores.parents()
    assert parent.data.params["sampler"] == sampler and parent.data.params["pruner"] == pruner
    assert len(stores.children(parent.info.run_id)) == 2


def _torch_importable() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _torch_importable(), reason="GPSampler needs PyTorch")
def test_gp_sampler_runs_trials(tmp_path: Path) -> None:
    overrides = ["objective=value", "train.epochs=200", "study.report_every=100"]
    overrides += ["study.n_trials=2", "study.sampler.name=gp", *NARROW_SPACE]
    assert run_sweep_in(tmp_path, overrides, log_model=False) == 0
    study = Stores(tmp_path).study("log-value")
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 2


@pytest.mark.skipif(_torch_importable(), reason="PyTorch is installed: GP runs instead")
def test_gp_sampler_without_torch_is_a_clean_config_error(tmp_path: Path) -> None:
    settings = settings_for(["study.sampler.name=gp", *store_overrides(tmp_path)])
    with pytest.raises(ConfigError, match="PyTorch") as caught:
        make_sampler(settings.study)
    assert caught.value.key == "study.sampler.name"
    # The whole sweep refuses with exit code 2 before writing any study or run.
    from pipeline.runner import run_sweep

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        with pytest.raises(SystemExit) as exited:
            run_sweep(settings)
    assert exited.value.code == 2
    journal = tmp_path / "mlruns" / "optuna.journal"
    if journal.exists():
        assert not Stores(tmp_path).storage.get_all_studies()


@pytest.mark.parametrize(
    ("key", "value"),
    [("sampler", {"name": "annealing"}), ("pruner", {"name": "percentile"})],
)
def test_unknown_sampler_or_pruner_names_the_key(key: str, value: dict) -> None:
    raw = {
        "name": "log-{objective}",
        "n_trials": 2,
        "storage": "mlruns/optuna.journal",
        "sampler": "tpe",
        "pruner": "median",
        "seed": 0,
        "n_workers": 1,
        "report_every": 100,
        "max_failures": 5,
        "heartbeat_interval": 10,
        "grace_period": 30,
    } | {key: value}
    with pytest.raises(ConfigError) as caught:
        read_study(raw)
    assert caught.value.key == f"study.{key}.name"


# ---------------------------------------------------------------------------------------------
# The real command line, once.


@pytest.mark.slow
def test_command_line_sweep_end_to_end(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-m", "pipeline.sweep", "study.n_trials=2", "train.epochs=300"]
    command += ["study.report_every=100"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Compare the runs:" in done.stdout  # the summary ends with how to look
    stores = Stores(tmp_path)
    parents = stores.parents()
    assert sorted(p.data.tags["pipeline.objective"] for p in parents) == ["derivative", "value"]
    for parent in parents:
        study = stores.study(parent.data.tags["optuna.study_name"])
        assert len(stores.children(parent.info.run_id)) == len(study.trials) == 2
        assert parent.data.tags["best_run_id"] == study.best_trial.user_attrs["mlflow_run_id"]
    assert not (tmp_path / "outputs").exists(), "Hydra must not write outputs/ beside mlruns/"
