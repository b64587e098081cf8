"""What coordinating N workers on one study costs: the journal file, PostgreSQL, and PostgreSQL
behind Optuna's gRPC storage proxy, at 1,000 and 10,000 trials of history.

Each simulated worker (`benchmarks/simulated_worker.py`) is a process making the storage calls
of the project's worker loop (`sweeping.trials`, `sweeping.worker`) through the product's own
functions: the live-trial count and the bounded ask (`telling.ask_within`), its worker
attribute, `space.suggest` over the default space with the project's sampler and pruner, a
report and a prune check on the worker's `PrunerView` every `report_every` of 10,000 epochs, a
heartbeat every `heartbeat_interval` (RDB only), the run id attribute, the tell, then the tally
and the stale-trial repair. It reads the history once before its first trial, as `run_study`.
**The trainer is a stand-in**: it sleeps `--trial-seconds` split over the reports and returns a
made-up loss curve; no TensorFlow, no MLflow (the recorder talks to MLflow from its own process:
benchmarks/tracking.py). `--sampler reader` also replaces TPE by **a stand-in** that reads the
history as TPE does and samples at random, so that the storage's times are not the CPU queue of
16 or 64 TPE models on 2 cores; the sampler's own cost is printed apart, in memory.

Printed per storage, history and N (legend in the output): trials per second; per trial, the
coordination time, the time inside storage calls (wall, and this worker's CPU), storage calls
and SQL statements, the rest (sampler and pruner), the CPU of the database's backends (and of the
proxy) per trial; peak client connections (`pg_stat_activity`); errors; lost, doubled and
surplus trials. PostgreSQL histories past 1,000 trials are copies of the first 1,000 made in SQL.

    python benchmarks/coordination.py [--storages journal pg proxy] [--workers 1 16 64]
        [--history 1000 10000] [--trials-per-worker 2] [--min-trials 16] [--trial-seconds 1.0]
        [--sampler tpe|reader] [--keep-history] [--pruner-view on off] [--report-every 500]

Then the sampler's own compute per ask in memory at each history size, for TPE as the project
builds it, two cheaper TPE options and the random sampler (`--storages` alone prints only that).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import simulated_worker
from coordination_storages import (
    PG,
    admin,
    cpu_seconds,
    free_port,
    prepare,
    wait_port,
    watch_database,
)
from simulated_worker import sampler_costs, study_cfg, worker


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storages", nargs="*", default=["journal", "pg", "proxy"])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--history", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--trials-per-worker", type=int, default=2)
    parser.add_argument("--min-trials", type=int, default=16, help="new trials per run, at least")
    parser.add_argument("--trial-seconds", type=float, default=1.0)
    reader = "reader: a stand-in that reads the history as TPE does, no model"
    parser.add_argument("--sampler", choices=["tpe", "reader"], default="tpe", help=reader)
    keep = "keep the PostgreSQL history databases for the next invocation"
    parser.add_argument("--keep-history", action="store_true", help=keep)
    every = "study.report_every (default 500: 20 reports a trial of 10,000 epochs)"
    parser.add_argument("--report-every", type=int, help=every)
    views = "off: the pruner reads the study at every check (no PrunerView); rows marked -"
    parser.add_argument(
        "--pruner-view", nargs="+", choices=["on", "off"], default=["on"], help=views
    )
    return parser.parse_args()


def run(kind: str, n: int, history: int, args, scratch: Path, view: bool = True) -> dict:
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
                env={**os.environ, "PGAPPNAME": "coordination-proxy"},
            )
            wait_port(port, proxy)
            url = f"grpc://127.0.0.1:{port}"
    context = multiprocessing.get_context("fork")
    start, queue = context.Barrier(n + 1), context.Queue()
    processes = [context.Process(target=worker, args=(i, url, history + new, args.trial_seconds,
                                                      args.sampler, view, start, queue))
                 for i in range(n)]  # fmt: skip
    for p in processes:
        p.start()
    stop, started, seen = threading.Event(), threading.Event(), {}
    poller = None
    if database:
        poller = threading.Thread(target=watch_database, args=(database, stop, started, seen))
        poller.start()
    start.wait()
    started.set()
    began, proxy_cpu = time.perf_counter(), cpu_seconds(proxy.pid) if proxy else 0.0
    outcomes = [queue.get() for _ in processes]
    wall = time.perf_counter() - began
    for p in processes:
        p.join()
    stop.set()
    if poller:
        poller.join()
    if proxy:
        seen["cpu"] = seen.get("cpu", 0.0) + cpu_seconds(proxy.pid) - proxy_cpu
        proxy.terminate()
        proxy.wait()
    return summarize(kind, n, history, new, url if kind == "journal" else database, outcomes,
                     wall, seen)  # fmt: skip


def summarize(kind, n, history, new, where, outcomes, wall, seen) -> dict:
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
    wall_s, cpu, calls, sql = zip(*[s for o in outcomes for s in o.storage], strict=True)
    errors = [e for o in outcomes for e in o.errors]
    q = lambda xs, p: statistics.quantiles(xs, n=100)[p - 1] * 1e3 if len(xs) > 1 else xs[0] * 1e3  # noqa: E731
    rest = [c - s for c, s in zip(coordination, wall_s, strict=True)]
    return {
        "trials": len(finished), "per_s": len(finished) / wall,
        "coord": (q(coordination, 50), q(coordination, 95)), "wall": (q(wall_s, 50), q(wall_s, 95)),
        "cpu": q(cpu, 50), "calls": statistics.median(calls), "sql": statistics.median(sql),
        "rest": q(rest, 50), "errors": len(errors),
        "server": seen.get("cpu", 0) / max(len(finished), 1) * 1e3,
        "peak": [seen.get(k, 0) for k in ("peak", "per_process", "run_peak")],
        "first_error": errors[0] if errors else "",
        "lost": len(set(told) - finished), "doubled": len(told) - len(set(told)),
        "surplus": len(finished) - new,
    }  # fmt: skip


LEGEND = """Per trial (ms; p50 over all workers' trials unless p95):
  coord   wall time outside the stand-in's sleeps: ask, suggest, reports, prune checks,
          heartbeats, tell, then the tally and the stale-trial repair
  (a row's storage marked -: --pruner-view off, the pruner reading the study at every check)
  st wall time inside storage calls (with 16-64 processes on 2 cores, partly the CPU queue)
  st cpu  this worker's own CPU inside storage calls (not the database's nor the proxy's)
  calls   storage calls; SQL: statements sent (PostgreSQL direct only)
  rest    coord - st wall: the sampler's and the pruner's compute
  db cpu  the database backends' CPU (and the proxy's, in proxy rows) per trial, a run's mean
  peak    most client connections to the study's database at once (0.1 s polls), start-up
          included; run: once every worker had opened the storage; /proc: most held by one
          process"""


def main() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    args = parse_args()
    if args.report_every:
        simulated_worker.STUDY_OVERRIDES["report_every"] = args.report_every
    every = simulated_worker.study_cfg("x").report_every
    sampler = "TPE as the project builds it" if args.sampler == "tpe" else (
        "**a stand-in** reading the history as TPE does, sampling at random")  # fmt: skip
    print(f"Stand-in trainer: each trial sleeps {args.trial_seconds} s over its reports (no "
          f"TensorFlow, no MLflow), reporting every {every} of {simulated_worker.EPOCHS:,} epochs. "
          f"Sampler: {sampler}.\n{LEGEND}")  # fmt: skip
    header = (
        f"{'storage':<8}{'history':>8}{'N':>4}{'trials':>7}{'trials/s':>9}{'coord p50':>10}"
        f"{'p95':>8}{'st wall p50':>12}{'p95':>8}{'st cpu':>7}{'calls':>6}{'SQL':>5}{'rest':>7}"
        f"{'db cpu':>7}"
        f"{'peak':>5}{'run':>5}{'/proc':>6}{'errors':>7}{'lost':>5}{'doubled':>8}{'surplus':>8}"
    )
    if args.storages:
        print(header)
        print("-" * len(header))
    scratch = Path(tempfile.mkdtemp(prefix="coordination-"))
    try:
        for kind in args.storages:
            for history in args.history:
                for n, view in [(n, v) for n in args.workers for v in args.pruner_view]:
                    r = run(kind, n, history, args, scratch, view == "on")
                    label = kind if view == "on" else f"{kind}-"
                    peak, most, run_peak = r["peak"] if kind != "journal" else "---"
                    sql = f"{r['sql']:.0f}" if kind == "pg" else "-"
                    print(
                        f"{label:<8}{history:>8}{n:>4}{r['trials']:>7}{r['per_s']:>9.2f}"
                        f"{r['coord'][0]:>10.1f}{r['coord'][1]:>8.1f}{r['wall'][0]:>12.1f}"
                        f"{r['wall'][1]:>8.1f}{r['cpu']:>7.1f}{r['calls']:>6.0f}{sql:>5}"
                        f"{r['rest']:>7.1f}{r['server']:>7.1f}{peak:>5}{run_peak:>5}{most:>6}"
                        f"{r['errors']:>7}{r['lost']:>5}{r['doubled']:>8}{r['surplus']:>8}",
                        flush=True,
                    )
                    if r["first_error"]:
                        print(f"  first error: {r['first_error']}", flush=True)
        sampler_costs(args.history)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if any(k != "journal" for k in args.storages):
            kept = () if args.keep_history else args.history
            for name in ("coordination_run", *(f"coordination_history_{h}" for h in kept)):
                admin(f"drop database if exists {name} with (force)")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
