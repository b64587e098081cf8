"""Tracking-server outages, the parts on their own: a finished trial's record waits in a local
spool (loadable without TensorFlow, held by one sender at a time), sending it again completes
its one run, an MLflow that does not answer is told apart from one that refuses a request, and
the recorder keeps its records while MLflow is away.

The same outages end to end, against real `mlflow server` processes: test_outage_e2e.py.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import servers
from sweeping import RUN_PLOTS, artifact_paths

from pipeline.core.data import make_dataset
from pipeline.core.problem_config import shipped
from pipeline.core.results import Report, TrainResult
from pipeline.defaults import load
from pipeline.names import PARENT_TAG, STATE_TAG
from pipeline.tracking.spool import Spool, TrialRecord, claimed, trial_record

DATA = load("train").data  # the shipped data settings (conf/data/default.yaml)


def fake_result(epochs: int = 500) -> TrainResult:
    """A trained network's result as the trainer returns it, without training."""
    steps = np.arange(50, epochs + 1, 50)
    data = make_dataset(DATA, shipped("log"), 1.0)
    return TrainResult(
        history_epochs=steps,
        history_loss=1.0 / steps,
        reports=[Report(250, 0.01, 0.5, 0.6), Report(epochs, 0.001, 0.05, 0.06)],
        val_value_mse=0.05,
        val_deriv_mse=0.06,
        epochs_run=epochs,
        diverged_at=None,
        stopped_early=False,
        weights=[np.ones((1, 4), np.float32), np.zeros(4, np.float32)],
        val_f=np.log(data.x_val),
        val_df=1.0 / data.x_val,
        seconds=0.1,
    )


def record_for(client, number: int = 0, parent: str | None = None) -> TrialRecord:
    experiment = client.get_experiment_by_name("pipeline")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("pipeline")
    parent = parent or client.create_run(experiment_id).info.run_id
    return trial_record(
        experiment_id=experiment_id,
        parent_run_id=parent,
        study_name="log-value",
        number=number,
        objective="value",
        state="COMPLETE",
        params={"n_layers": 1, "hidden": [4]},
        result=fake_result(),
        data=make_dataset(DATA, shipped("log"), 1.0),
        start=time.time() - 3,
    )


def _ended(pid: int) -> bool:
    """Whether process `pid` has exited (gone, or a zombie waiting to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] in "ZX"
    except FileNotFoundError:
        return True


def sqlite_client(tmp_path: Path):
    """A client on a fresh store in `tmp_path`, its experiment's artifacts there too (MLflow's
    default artifact location is relative to the working directory)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    if client.get_experiment_by_name("pipeline") is None:
        client.create_experiment("pipeline", artifact_location=(tmp_path / "artifacts").as_uri())
    return client


# --- the record and its idempotent sending -------------------------------------------------


def test_a_spooled_record_loads_without_tensorflow(tmp_path):
    spool = Spool(tmp_path / "spool", "http://127.0.0.1:1")
    record = trial_record(
        experiment_id="1",
        parent_run_id="p",
        study_name="s",
        number=7,
        objective="value",
        state="PRUNED",
        reason="pruned at epoch 100 by the pruner",
        result=fake_result(),
        data=make_dataset(DATA, shipped("log"), 1.0),
    )
    path = spool.write(record)
    assert spool.waiting() == [path] and not list(spool.directory.glob(".*"))  # no temp left
    code = (
        "import pickle, sys; from pathlib import Path\n"
        "from pipeline.tracking.spool import claimed\n"
        f"with claimed(Path({str(path)!r})) as r: print(r.run_name, r.tags['optuna.state'])\n"
        "import pipeline.tracking.delivery, pipeline.tracking.recording\n"
        "print('tensorflow' in sys.modules)"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["s-0007", "PRUNED", "False"], out.stderr[-2000:]
    assert Spool(tmp_path / "spool", "http://other:5000").waiting() == []  # keyed by store


def test_records_pickle_round_trip():
    record = trial_record(
        experiment_id="1",
        parent_run_id="p",
        study_name="s",
        number=1,
        objective="value",
        state="FAIL",
        reason="interrupted",
        killed=True,
    )
    assert pickle.loads(pickle.dumps(record)) == record
    assert record.status == "KILLED" and record.result is None


def test_a_record_held_by_one_sender_is_skipped_by_another(tmp_path):
    spool = Spool(tmp_path, "sqlite:///x.db")
    path = spool.write(record_for(sqlite_client(tmp_path)))
    with claimed(path) as mine:
        assert mine is not None
        with claimed(path) as theirs:
            assert theirs is None
        path.unlink()  # sent: removed while still held
    with claimed(path) as late:
        assert late is None


def test_sending_a_record_again_completes_its_one_run(tmp_path):
    from pipeline.tracking.delivery import find_trial_run, send_record

    client = sqlite_client(tmp_path)
    record = record_for(client, number=3)
    # A first attempt that got no further than creating the run (the server died after it).
    client.create_run(
        record.experiment_id,
        start_time=record.start_ms,
        tags={**record.tags, PARENT_TAG: record.parent_run_id},
        run_name=record.run_name,
    )
    first = send_record(client, record)
    again = send_record(client, record)  # the answer was lost; the record is sent again
    assert first == again
    run = find_trial_run(client, record.experiment_id, record.parent_run_id, 3)
    assert run.info.run_id == first and run.info.status == "FINISHED"
    assert (run.info.start_time, run.info.end_time) == (record.start_ms, record.end_ms)
    assert run.info.run_name == "log-value-0003"
    assert run.data.tags[STATE_TAG] == "COMPLETE"
    history = client.get_metric_history(first, "loss")
    assert len(history) == len(record.result.history_epochs)  # not doubled
    assert artifact_paths(client, first) >= RUN_PLOTS
    children = client.search_runs(
        [record.experiment_id], f"tags.`{PARENT_TAG}` = '{record.parent_run_id}'"
    )
    assert len(children) == 1


def test_unreachable_means_no_answer_not_a_bad_request(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.outage import unreachable

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    down = MlflowClient(f"http://127.0.0.1:{servers.free_port()}")
    with pytest.raises(Exception) as away:
        down.get_experiment_by_name("pipeline")
    assert unreachable(away.value)
    with pytest.raises(Exception) as wrong:
        sqlite_client(tmp_path).get_run("no-such-run")
    assert not unreachable(wrong.value)


def test_the_recorder_keeps_records_while_mlflow_is_away(tmp_path):
    from pipeline.tracking.outage import TrackingOutage
    from pipeline.tracking.recorder import BackgroundRecorder

    uri = f"http://127.0.0.1:{servers.free_port()}"  # nothing listens there
    spool = Spool(tmp_path / "spool", uri)
    record = record_for(sqlite_client(tmp_path))
    with pytest.raises(TrackingOutage) as stopped, BackgroundRecorder(spool) as recorder:
        recorder.submit(record)
        recording = [p.pid for p in multiprocessing.active_children()]
        assert recording  # the recording process started with the first record
        servers.wait_until(recorder.outage, 60, "the recorder to notice MLflow is away")
        assert recorder.waiting() == 1
        recorder.drain(patience=0.5)
    assert spool.count() == 1  # abandoned, not lost
    # The recording process is ended (asked of the OS: the pool's own thread may reap it first).
    servers.wait_until(lambda: all(map(_ended, recording)), 10, "the recording process to end")
    line = stopped.value.line(spool.count())
    assert uri in line and "holds 1 record of finished trials" in line and "rerun" in line
    with claimed(spool.waiting()[0]) as kept:
        assert (kept.run_name, kept.tags, kept.end_ms) == (
            record.run_name,
            record.tags,
            record.end_ms,
        )
