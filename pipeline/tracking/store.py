"""MLflow bookkeeping: the experiment, runs, params, metric histories, plots and the best model.

Everything goes through one `MlflowClient` with explicit run ids (no global active run), so a
study's parent run can be resumed by any worker and runs can be closed by whoever notices.
Writes are batched: a run's params, metric history and final metrics go in one `log_batch`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from pipeline.names import DEFAULT_STORE, PARENT_TAG
from pipeline.settings import TrackingConfig
from pipeline.tracking.places import artifact_root, sqlite_path

# MLflow 3 reports usage telemetry by default: nothing of a user's sweep leaves the machine.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# A progress bar per small artifact download (the best weights) is noise in the sweep's output.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# With a tracking server, MLflow prints "View run … / View experiment …" for every run it ends:
# two lines per trial in the sweep's progress. The summary prints the one link that matters.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
for _name in ("alembic", "mlflow"):
    logging.getLogger(_name).setLevel(logging.WARNING)
# While a tracking server is away the sweep says so once (tracking.outage and .delivery);
# urllib3's "Retrying ..." and MLflow's own retry warnings would repeat it per request.
for _name in ("urllib3", "mlflow.utils.rest_utils", "mlflow.utils.request_utils"):
    logging.getLogger(_name).setLevel(logging.ERROR)
# A database store that drops its connection logs a traceback before MLflow raises the error
# the sweep handles (and retries) itself.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
_OPENED: set[str] = set()  # embedded stores this process has opened (`first_use`)


def connect(cfg: TrackingConfig) -> tuple[MlflowClient, str]:
    """A client on `cfg.uri` and the id of `cfg.experiment`, created if missing.

    With the embedded SQLite store, artifacts go to `mlruns/` beside the database file.
    """
    artifact_location = artifact_root(cfg.uri)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    with first_use(cfg.uri):
        client = MlflowClient(tracking_uri=cfg.uri)
        experiment = client.get_experiment_by_name(cfg.experiment)
    if experiment is not None:
        return client, experiment.experiment_id
    try:
        return client, client.create_experiment(cfg.experiment, artifact_location=artifact_location)
    except Exception:  # another worker created it first
        experiment = client.get_experiment_by_name(cfg.experiment)
        if experiment is None:
            raise
        return client, experiment.experiment_id


@contextlib.contextmanager
def first_use(uri: str) -> Iterator[None]:
    """Held while this process first opens an embedded SQLite store: workers that a scheduler
    starts together would otherwise all create its tables and run its migrations at once (and
    lose the race with "table already exists"). An exclusive `flock` on `<db>.lock`; a no-op
    for any other store and once the process has opened this one."""
    db = sqlite_path(uri)
    if db is None or uri in _OPENED:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
            _OPENED.add(uri)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def start_run(
    client: MlflowClient,
    experiment_id: str,
    name: str,
    tags: Mapping[str, str],
    parent_run_id: str | None = None,
) -> str:
    """Create a RUNNING run (nested under `parent_run_id` when given) and return its id."""
    all_tags = dict(tags)
    if parent_run_id is not None:
        all_tags[PARENT_TAG] = parent_run_id
    return client.create_run(experiment_id, run_name=name, tags=all_tags).info.run_id


def _metrics(name: str, steps: Iterable[int], values: Iterable[float], now: int) -> list[Metric]:
    return [Metric(name, float(v), now, int(s)) for s, v in zip(steps, values, strict=True)]


def log_training(
    client: MlflowClient,
    run_id: str,
    params: Mapping[str, Any],
    history: tuple[np.ndarray, np.ndarray],
    reports: Iterable[tuple[int, float, float]],
    final: Mapping[str, float],
    final_step: int,
    tags: Mapping[str, str] | None = None,
    timestamp: int | None = None,
) -> None:
    """Params, the loss history, validation errors per report and final metrics: one batch.

    `history` is (epochs, loss); `reports` yields (epoch, val_value_mse, val_deriv_mse); every
    key in `final` is logged at `final_step`, so the UI's latest value is the final one.
    `timestamp` (ms, default now) stamps every metric.
    """
    now = int(time.time() * 1000) if timestamp is None else timestamp
    reports = list(reports)
    metrics = _metrics("loss", history[0], history[1], now)
    reported = [r for r in reports if r[0] != final_step]
    metrics += _metrics("val_value_mse", [r[0] for r in reported], [r[1] for r in reported], now)
    metrics += _metrics("val_deriv_mse", [r[0] for r in reported], [r[2] for r in reported], now)
    metrics += [Metric(k, float(v), now, final_step) for k, v in final.items()]
    client.log_batch(
        run_id,
        metrics=metrics,
        params=[Param(k, str(v)) for k, v in params.items()],
        tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        synchronous=True,
    )


def log_directory(
    client: MlflowClient, run_id: str, directory: Path, artifact_path: str | None = None
) -> None:
    """Upload every file of `directory` under `artifact_path`."""
    client.log_artifacts(run_id, str(directory), artifact_path)


def scratch_dir() -> tempfile.TemporaryDirectory:
    """A temporary folder for files on their way to the artifact store."""
    return tempfile.TemporaryDirectory(prefix="pipeline-")


def end_run(
    client: MlflowClient,
    run_id: str,
    status: str = "FINISHED",
    tags: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    end_time: int | None = None,
) -> None:
    """Close a run as FINISHED, FAILED or KILLED, first tagging it (why it ended, its state)
    and logging `metrics` at step 0, in one batch; `end_time` (ms) defaults to now."""
    if tags or metrics:
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
            synchronous=True,
        )
    client.set_terminated(run_id, status=status, end_time=end_time)


def log_keras_model(client: MlflowClient, run_id: str, model: Any) -> None:
    """Attach a Keras model to an existing run with MLflow's Keras flavour.

    The signature (x column in, f(x) column out) and the requirements are given, so MLflow
    neither warns nor spends seconds re-importing TensorFlow in a subprocess to infer them.
    """
    from importlib.metadata import version

    import mlflow
    import mlflow.keras
    from mlflow.models import infer_signature

    info = client.get_run(run_id).info
    example = np.array([[0.5], [1.0]], dtype=np.float32)
    signature = infer_signature(example, np.asarray(model(example)))
    requirements = [f"{p}=={version(p)}" for p in ("tensorflow", "keras", "numpy")]
    mlflow.set_tracking_uri(client.tracking_uri)
    with mlflow.start_run(run_id=run_id):
        mlflow.keras.log_model(
            model, name="model", signature=signature, pip_requirements=requirements
        )
    if info.status != "RUNNING":  # reopening the run moved its end; the run's duration stays true
        end_run(client, run_id, info.status, end_time=info.end_time)


def ui_command(uri: str, experiment_id: str | None = None) -> str:
    """How to see the runs: the runs page of a server's UI, or the command serving this store.

    `python -m pipeline.ui` serves the MLflow UI and prints the deep link to the experiment's
    training runs (MLflow 3 otherwise opens on a GenAI overview that shows none of them).
    """
    from pipeline.ui import runs_url

    if uri.startswith(("http://", "https://")):
        return runs_url(uri, experiment_id) if experiment_id else uri
    command = "python -m pipeline.ui"
    if uri != DEFAULT_STORE:
        command += f" --backend-store-uri {uri}"
    if experiment_id:
        command += f" --experiment-id {experiment_id}"
    return command
