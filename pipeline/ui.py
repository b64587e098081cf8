"""`python -m pipeline.ui`: the MLflow UI on the project's store, opened on the training runs.

`python -m pipeline.ui --optuna` serves optuna-dashboard on the sweep's study storage instead
(`pipeline.tracking.dashboard`).

Starts `mlflow server` over the tracking store (default: the sweep's `sqlite:///mlruns/mlflow.db`),
waits until it answers `/health`, then prints the URL of the experiment's runs table and keeps
serving until Ctrl-C.

Why a deep link: MLflow 3.17 opens an experiment on its GenAI overview (traces, token usage),
which shows a training-runs user nothing. `#/experiments/<id>/runs?workflowType=machine_learning`
lands on the runs table with the "Model training" navigation (Runs, Models, Model registry).

Artifacts: runs of the embedded store carry absolute `file://…/mlruns/artifacts/<run>/artifacts`
URIs, which the server reads directly (its `/get-artifact` endpoint), so the plots of existing runs
show as they are. `--artifacts-destination` points the server's artifact proxy at the same folder,
so runs logged THROUGH this server (`tracking.uri=http://host:port`) land beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import webbrowser

from pipeline.names import DEFAULT_EXPERIMENT, DEFAULT_STORAGE, DEFAULT_STORE
from pipeline.tracking import dashboard
from pipeline.tracking.places import artifact_root, sqlite_path

WORKFLOW = "workflowType=machine_learning"
# Headless Chromium flags for looking at the UI on a machine with no outside network
# (the docs script and the browser test): no background traffic, no sandbox as root.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def runs_url(base_url: str, experiment_id: str) -> str:
    """The UI page listing the experiment's runs (not MLflow 3's GenAI overview)."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{WORKFLOW}"


def server_command(backend_store_uri: str, host: str, port: int, workers: int = 1) -> list[str]:
    """The `mlflow server` command line for this store."""
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_store_uri,
        "--host", host,
        "--port", str(port),
        "--workers", str(workers),
        "--uvicorn-opts", "--no-access-log",  # keep the printed URL readable
    ]  # fmt: skip
    root = artifact_root(backend_store_uri)
    if root is not None:
        command += ["--artifacts-destination", root]
    return command


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def wait_until_healthy(base_url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    """Block until `base_url/health` answers; raise if the server exits or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {process.returncode}")
        try:
            if _get(f"{base_url}/health", timeout=2.0).strip() == b"OK":
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"mlflow server did not answer {base_url}/health within {timeout:.0f}s")


def experiment_id_by_name(base_url: str, name: str) -> str | None:
    """The id of experiment `name` on the running server, or None if it does not exist."""
    query = urllib.parse.urlencode({"experiment_name": name})
    try:
        body = _get(f"{base_url}/api/2.0/mlflow/experiments/get-by-name?{query}")
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise
    return json.loads(body)["experiment"]["experiment_id"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.ui",
        description="Serve the MLflow UI on the project's tracking store and print the URL "
        "of the experiment's training runs.",
    )
    parser.add_argument("--backend-store-uri", default=DEFAULT_STORE, help="%(default)s")
    parser.add_argument("--host", default="127.0.0.1", help="%(default)s")
    parser.add_argument("--port", type=int, help="5000 (MLflow) or 8080 (optuna-dashboard)")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="name; %(default)s")
    parser.add_argument("--experiment-id", help="open this experiment id (overrides the name)")
    parser.add_argument("--workers", type=int, default=1, help="server workers; %(default)s")
    parser.add_argument("--open", action="store_true", help="also open the URL in a browser")
    parser.add_argument(
        "--optuna",
        action="store_true",
        help="serve optuna-dashboard on the study storage instead (the `dashboard` extra)",
    )
    parser.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        help="with --optuna: a journal file or an RDB URL; %(default)s",
    )
    return parser.parse_args(argv)


def port_in_use(host: str, port: int) -> bool:
    """Whether `host:port` is taken: checked before a server starts, since `mlflow server`
    exits 0 without a word when it cannot bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.port = args.port or (dashboard.DEFAULT_PORT if args.optuna else 5000)
    if port_in_use(args.host, args.port):
        print(f"error: port {args.port} is in use (--port N)", file=sys.stderr)
        return 2
    if args.optuna:
        return dashboard.serve(args.storage, args.host, args.port, args.open)
    db = sqlite_path(args.backend_store_uri)
    if db is not None and not db.exists():
        print(
            f"error: no tracking store at {db} (run `python -m pipeline.sweep` first, "
            "or pass --backend-store-uri)",
            file=sys.stderr,
        )
        return 2
    shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    base_url = f"http://{shown_host}:{args.port}"
    process = subprocess.Popen(
        server_command(args.backend_store_uri, args.host, args.port, args.workers),
        start_new_session=True,  # our own process group: Ctrl-C here stops all its workers
    )
    try:
        wait_until_healthy(base_url, process)
        experiment_id = args.experiment_id or experiment_id_by_name(base_url, args.experiment)
        if experiment_id is None:
            url = base_url
            print(f"no experiment named {args.experiment!r} in {args.backend_store_uri}")
        else:
            url = runs_url(base_url, experiment_id)
        print(f"MLflow UI on {args.backend_store_uri}: {url}", flush=True)
        print("(Ctrl-C stops the server)", flush=True)
        if args.open:
            webbrowser.open(url)
        return process.wait()
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, TimeoutError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
