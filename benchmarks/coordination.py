"""What coordinating N workers on one study costs: the journal file, PostgreSQL, and PostgreSQL
behind Optuna's gRPC storage proxy, at 1,000 and 10,000 trials of history.

Each simulated worker (`benchmarks/simulated_worker.py`) is a process running the storage calls
of the project's worker loop (`sweeping.trials`): the bounded ask (`telling.ask_within`, after
the same live-trial count), its worker attribute, `space.suggest` over the default search
space with the project's sampler and pruner (`sweeping.study`), a report and a prune check every
`report_every` of 10,000 epochs, a heartbeat every `heartbeat_interval` (RDB only), the run id
attribute, and the tell.
**The trainer is a stand-in**: it sleeps `--trial-seconds` split over the reports and returns a
plausible loss history (a power-law decay from a random start); no TensorFlow, no MLflow (the
recorder talks to MLflow from its own process and is measured by benchmarks/tracking.py).

Printed per storage, history and N: trials per second; p50/p95 of a trial's coordination time
(ask + reports + prune checks + heartbeats + tell, wall) and of its storage share (time inside
storage calls) beside the sampler's and pruner's compute (the rest); peak PostgreSQL
connections (`pg_stat_activity`, polled every 0.1 s); errors; lost, doubled and surplus trials.

    python benchmarks/coordination.py [--storages journal pg proxy] [--workers 1 16 64]
        [--history 1000 10000] [--trials-per-worker 2] [--trial-seconds 1.0]

Then the sampler's own compute per ask in memory at each history size, for TPE as the project
builds it, two cheaper TPE options and the random sampler (`--storages` alone prints only that).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from simulated_worker import history_trials, study_cfg, worker

PG = dict(host="127.0.0.1", port=5432, user="postgres")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storages", nargs="*", default=["journal", "pg", "proxy"])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--history", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--trials-per-worker", type=int, default=2)
    parser.add_argument("--min-trials", type=int, default=16, help="new trials per run, at least")
    parser.add_argument("--trial-seconds", type=float, default=1.0)
    return parser.parse_args()


def admin(sql: str, database: str = "postgres") -> list:
    import psycopg

    with psycopg.connect(dbname=database, autocommit=True, **PG) as connection:
        cursor = connection.execute(sql)
        return cursor.fetchall() if cursor.description else []


def peak_connections(database: str, stop: threading.Event, peak: list[int]) -> None:
    while not stop.is_set():
        rows = admin(f"select count(*) from pg_stat_activity where datname = '{database}'")
        peak[0] = max(peak[0], int(rows[0][0]))
        stop.wait(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the proxy exited: {process.stdout.read()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)  # polling a server that is starting
    raise RuntimeError("the proxy did not start")


def prepare(kind: str, history: int, scratch: Path) -> str:
    """A storage holding the study `bench` with `history` finished trials: made once per kind
    and size (a journal file, a template database), copied for every run."""
    import optuna

    from pipeline.sweeping.study import make_pruner, make_sampler, make_storage

    key = f"coordination_history_{history}"
    if kind == "journal":
        source = scratch / f"{key}.journal"
        if not source.exists():
            study = optuna.create_study(storage=make_storage(study_cfg(str(source))),
                                        study_name="bench")  # fmt: skip
            study.add_trials(history_trials(history))
        return str(source)
    if not admin(f"select 1 from pg_database where datname = '{key}'"):
        admin(f"create database {key}_tmp")
        url = f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{key}_tmp"
        cfg = study_cfg(url)
        storage = make_storage(cfg)
        study = optuna.create_study(storage=storage, study_name="bench",
                                    sampler=make_sampler(cfg), pruner=make_pruner(cfg))  # fmt: skip
        study.add_trials(history_trials(history))
        storage.engine.dispose()
        admin(f"alter database {key}_tmp rename to {key}")
    return key


def run(kind: str, n: int, history: int, args, scratch: Path) -> dict:
    source = prepare(kind, history, scratch)
    new = max(args.min_trials, n * args.trials_per_worker)
    proxy, database = None, None
    if kind == "journal":
        url = str(scratch / "run.journal")
        shutil.copy(source, url)
    else:
        database = "coordination_run"
        admin(f"drop database if exists {database} with (force)")
        admin(f"create database {database} template {source}")
        url = f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{database}"
        if kind == "proxy":
            port = free_port()
            command = [sys.executable, "-m", "pipeline.sweeping.storage", url]
            proxy = subprocess.Popen(
                [*command, "--host", "127.0.0.1", "--port", str(port)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            wait_port(port, proxy)
            url = f"grpc://127.0.0.1:{port}"
    context = multiprocessing.get_context("fork")
    start, queue = context.Barrier(n + 1), context.Queue()
    processes = [context.Process(target=worker, args=(i, url, history + new, args.trial_seconds,
                                                      start, queue)) for i in range(n)]  # fmt: skip
    for p in processes:
        p.start()
    stop, peak = threading.Event(), [0]
    poller = None
    if database:
        poller = threading.Thread(target=peak_connections, args=(database, stop, peak))
        poller.start()
    start.wait()
    began = time.perf_counter()
    outcomes = [queue.get() for _ in processes]
    wall = time.perf_counter() - began
    for p in processes:
        p.join()
    stop.set()
    if poller:
        poller.join()
    if proxy:
        proxy.terminate()
        proxy.wait()
    return summarize(kind, n, history, new, url if kind == "journal" else database, outcomes,
                     wall, peak[0])  # fmt: skip


def summarize(kind, n, history, new, where, outcomes, wall, peak) -> dict:
    import optuna

    from pipeline.sweeping.study import FINISHED, make_storage

    url = where if kind == "journal" else f"postgresql://{PG['user']}@{PG['host']}/{where}"
    storage = make_storage(study_cfg(url))
    trials = optuna.load_study(study_name="bench", storage=storage).get_trials(deepcopy=False)
    finished = {t.number for t in trials[history:] if t.state in FINISHED}
    told = [number for o in outcomes for number in o.told]
    if hasattr(storage, "engine"):
        storage.engine.dispose()
    coordination = [c for o in outcomes for c in o.coordination]
    stored = [s for o in outcomes for s in o.storage]
    errors = [e for o in outcomes for e in o.errors]
    q = lambda xs, p: statistics.quantiles(xs, n=100)[p - 1] * 1e3 if len(xs) > 1 else xs[0] * 1e3  # noqa: E731
    rest = [c - s for c, s in zip(coordination, stored, strict=True)]
    return {
        "storage": kind, "N": n, "history": history, "trials": len(finished),
        "per_s": len(finished) / wall, "coord_p50": q(coordination, 50),
        "coord_p95": q(coordination, 95), "storage_p50": q(stored, 50),
        "storage_p95": q(stored, 95), "sampler_p50": q(rest, 50), "peak": peak,
        "errors": len(errors), "first_error": errors[0] if errors else "",
        "lost": len(set(told) - finished), "doubled": len(told) - len(set(told)),
        "surplus": len(finished) - new,
    }  # fmt: skip


SAMPLERS = {  # the sampler options compared in memory, beside the project's default (tpe)
    "tpe (group=true)": ("tpe", {}),
    "tpe n_ei_candidates=8": ("tpe", {"n_ei_candidates": 8}),
    "tpe group=false": ("tpe", {"group": False}),
    "random": ("random", {}),
}


def sampler_costs(histories: list[int], asks: int = 10) -> None:
    """ms per ask (with the search space's suggest calls) of each sampler in `SAMPLERS` on an
    in-memory study holding `history` finished trials: the sampler's compute alone."""
    import optuna

    from pipeline.defaults import load
    from pipeline.sweeping.space import suggest
    from pipeline.sweeping.study import make_sampler

    space = load("sweep").search
    print(f"\nsampler's own compute, in memory, ms per ask (median of {asks}):")
    print(f"{'sampler':<26}" + "".join(f"{h:>10,}" for h in histories))
    trials = {h: history_trials(h) for h in histories}
    for label, (name, options) in SAMPLERS.items():
        cells = []
        for h in histories:
            cfg = replace(study_cfg("x"), sampler=name, sampler_options=options)
            study = optuna.create_study(sampler=make_sampler(cfg))
            study.add_trials(trials[h])
            times = []
            for _ in range(asks):
                began = time.perf_counter()
                trial = study.ask()
                suggest(trial, space)
                times.append(time.perf_counter() - began)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            cells.append(f"{statistics.median(times) * 1e3:>10.1f}")
        print(f"{label:<26}" + "".join(cells), flush=True)


def main() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    args = parse_args()
    print("Stand-in trainer: each trial sleeps", args.trial_seconds, "s over its reports; "
          "no TensorFlow, no MLflow. Times in ms per trial.")  # fmt: skip
    header = (
        f"{'storage':<8}{'history':>8}{'N':>4}{'trials':>7}{'trials/s':>9}{'coord p50':>10}"
        f"{'p95':>8}{'storage p50':>12}{'p95':>8}{'sampler p50':>12}{'peak conn':>10}"
        f"{'errors':>7}{'lost':>5}{'doubled':>8}{'surplus':>8}"
    )
    if args.storages:
        print(header)
        print("-" * len(header))
    scratch = Path(tempfile.mkdtemp(prefix="coordination-"))
    try:
        for kind in args.storages:
            for history in args.history:
                for n in args.workers:
                    r = run(kind, n, history, args, scratch)
                    peak = str(r["peak"]) if kind != "journal" else "-"
                    print(
                        f"{kind:<8}{history:>8}{n:>4}{r['trials']:>7}{r['per_s']:>9.2f}"
                        f"{r['coord_p50']:>10.1f}{r['coord_p95']:>8.1f}{r['storage_p50']:>12.1f}"
                        f"{r['storage_p95']:>8.1f}{r['sampler_p50']:>12.1f}{peak:>10}"
                        f"{r['errors']:>7}{r['lost']:>5}{r['doubled']:>8}{r['surplus']:>8}",
                        flush=True,
                    )
                    if r["first_error"]:
                        print(f"  first error: {r['first_error']}", flush=True)
        sampler_costs(args.history)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if any(k != "journal" for k in args.storages):
            for name in ("coordination_run", *(f"coordination_history_{h}" for h in args.history)):
                admin(f"drop database if exists {name} with (force)")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
