"""`pipeline.train`'s recording process: it records what the in-process path records, and its
errors reach the training process instead of vanishing with the second process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ComposeFn
from mlflow.tracking import MlflowClient
from sweeping import RUN_PLOTS, artifact_paths

from pipeline.train import read_settings, run_one

OVERRIDES = ["train.epochs=200", "train.log_every=10", "train.compile_cache=null"]


def _run(compose_cfg: ComposeFn, uri: str, background: bool):
    settings = read_settings(compose_cfg("train", [*OVERRIDES, f"tracking.uri={uri}"]))
    return run_one(settings, verbose=False, background=background)


def test_background_and_in_process_recording_write_the_same_run(
    compose_cfg: ComposeFn, tmp_path: Path
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    here, there = _run(compose_cfg, uri, False), _run(compose_cfg, uri, True)
    client = MlflowClient(uri)
    runs = [client.get_run(o.run_id) for o in (here, there)]
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    assert runs[0].data.params == runs[1].data.params
    assert runs[0].data.tags["pipeline.role"] == runs[1].data.tags["pipeline.role"] == "run"
    assert runs[0].data.metrics.keys() == runs[1].data.metrics.keys()
    assert runs[1].data.metrics["val_value_mse"] == pytest.approx(
        runs[0].data.metrics["val_value_mse"], rel=1e-6
    )
    assert there.metrics["objective_value"] == runs[1].data.metrics["objective_value"]
    steps = [
        sorted(m.step for m in client.get_metric_history(o.run_id, "loss")) for o in (here, there)
    ]
    assert steps[0] == steps[1] and steps[1][-1] == 200
    assert artifact_paths(client, there.run_id) >= RUN_PLOTS
    assert there.ui_command == here.ui_command and "pipeline.ui" in there.ui_command


def test_a_store_the_recording_process_cannot_open_fails_the_run(
    compose_cfg: ComposeFn, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(OSError):
        _run(compose_cfg, f"sqlite:///{blocker / 'mlflow.db'}", True)


def test_ctrl_c_while_training_ends_both_processes_and_records_no_run(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "pipeline.train", "train.epochs=1000000",
               "train.compile_cache=null"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    assert process.stdout is not None
    first = process.stdout.readline()  # the first progress line: training is under way
    assert first.startswith("epoch"), first
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)
    assert process.returncode != 0
    db = tmp_path / "mlruns" / "mlflow.db"
    if db.exists():  # the recording process may have connected: it made no run
        client = MlflowClient(f"sqlite:///{db}")
        assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []
