"""Study options in a real sweep: resume and top-up, pruning, every sampler and pruner."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
import pytest
import sweeps
from optuna.trial import TrialState
from sweeping import NARROW_SPACE, Stores, run_sweep_in, settings_for, store_overrides

from pipeline.names import BASELINE_ATTR, PARENT_ATTR, REASON, STATE_TAG, TRIAL_TAG
from pipeline.settings import ConfigError
from pipeline.sweeping.study import make_sampler, read_n_jobs, read_study

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
    assert study.user_attrs[PARENT_ATTR] == parent.info.run_id
    children = stores.children(parent.info.run_id)
    assert len(children) == 4 and first_runs < {r.info.run_id for r in children}
    assert sorted(int(r.data.tags[TRIAL_TAG]) for r in children) == [0, 1, 2, 3]
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
            "study.population=1",  # one at a time: each trial meets finished ones to compare
            "study.n_jobs=1",
        ],
        log_model=False,
    )
    assert code == 0
    stores = Stores(tmp_path)
    study = stores.study("log-value")
    assert study.trials[0].user_attrs.get(BASELINE_ATTR) is True
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert pruned, [t.state.name for t in study.trials]
    client = stores.client
    for trial in pruned:
        run = sweeps.trial_run(client, study, trial.number)
        assert run.data.tags[STATE_TAG] == "PRUNED"
        assert run.data.tags[REASON] == trial.user_attrs[REASON]
        assert "pruned" in run.data.tags[REASON]
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
        ("tpe", "successive_halving"),
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


def test_tpe_samples_the_conditional_space_in_groups_quietly() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # group=True is "experimental": no warning reaches users
        grouped = make_sampler(settings_for([]).study)
    # Private, no public accessor (Optuna 5.0): whether TPE decomposes the space into groups.
    assert grouped._group is True
    plain = make_sampler(settings_for(["+study.sampler.options.group=false"]).study)
    assert plain._group is False
    with pytest.raises(ConfigError) as caught:  # conflicting options: a config error, not a trace
        make_sampler(settings_for(["+study.sampler.options.multivariate=false"]).study)
    assert caught.value.key == "study.sampler.options"


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
    # Refused when the settings are read, before any store, journal or compile cache exists
    # (the command-line form is in test_bad_input.py).
    with pytest.raises(ConfigError, match="PyTorch") as caught:
        settings_for(["study.sampler.name=gp", *store_overrides(tmp_path)])
    assert caught.value.key == "study.sampler.name"
    assert not (tmp_path / "mlruns").exists()


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
        read_study(raw, "log")
    assert caught.value.key == f"study.{key}.name"


@pytest.mark.parametrize(
    ("cpus", "n_workers", "expected"), [(1, 1, 1), (2, 1, 2), (8, 1, 2), (8, 4, 2), (8, 8, 1)]
)
def test_n_jobs_auto_gives_each_local_worker_two_threads_where_it_has_the_cpus(
    monkeypatch: pytest.MonkeyPatch, cpus: int, n_workers: int, expected: int
) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cpus)))
    assert read_n_jobs({"n_jobs": "auto", "n_workers": n_workers}) == expected
    assert read_n_jobs({"n_jobs": 3, "n_workers": n_workers}) == 3  # as given, whatever the CPUs
    for bad in (0, "two", True, 1.5):
        with pytest.raises(ConfigError, match="integer >= 1 or auto") as caught:
            read_n_jobs({"n_jobs": bad})
        assert caught.value.key == "study.n_jobs"
