"""Tracking overhead as a fraction of a sweep trial's wall time, at default settings.

Per trial configuration (10,000 epochs, report_every 500, weights padded as the sweep pads them,
graphs compiled in a warm-up first):
- train only: `pipeline.core.trainer.train`;
- synchronous: create the child run, train, `record.record_training` (params, metric history,
  final metrics, three plots, weights) and close the run, all in line;
- background: as the sweep does it, each finished trial's record spooled and handed to
  `record.BackgroundRecorder`'s process, which creates, fills and closes its run while the next
  trial trains (timed over the whole sequence, including the final drain).
Overhead = (path - train only) / train only. Target: <= 20%.

    python benchmarks/tracking.py [--epochs 10000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from pipeline.names import ROLE_TAG, STATE_TAG

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TARGET = 0.20
CONFIGS = [  # (hidden, activation, optimizer, learning_rate): the baseline and two sampled kinds
    ((10, 10), "sigmoid", "sgd", 0.1),
    ((32,), "tanh", "adam", 0.01),
    ((8, 24, 8), "softplus", "adam", 0.003),
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10_000)
    parser.add_argument("--report-every", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=2, help="passes over the configurations")
    return parser.parse_args()


class Bench:
    """The benchmark's store, data and trial configurations: a study run in a fresh SQLite store."""

    def __init__(self, args: argparse.Namespace) -> None:
        from pipeline.core.data import make_dataset
        from pipeline.core.problem_config import shipped
        from pipeline.defaults import load
        from pipeline.tracking import store

        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-tracking-"))
        uri = f"sqlite:///{self.workdir / 'mlruns' / 'mlflow.db'}"
        self.shipped_run = load("train", [f"tracking.uri={uri}", "tracking.experiment=bench"])
        self.data = make_dataset(self.shipped_run.data, shipped("log"), 1.0)
        self.client, self.experiment_id = store.connect(self.shipped_run.tracking)
        self.parent = store.start_run(self.client, self.experiment_id, "bench", {ROLE_TAG: "study"})
        self.space = load("sweep").search

    def spec(self, activation: str, optimizer: str, lr: float):
        from pipeline.core.trainer import TrainSpec

        o, train = self.shipped_run.objective, self.shipped_run.train
        return TrainSpec(activation, optimizer, lr, self.args.epochs, train.lr_decay, o.name,
                         o.anchor_weight, o.deriv_weight, train.log_every,
                         self.args.report_every)  # fmt: skip

    def train_one(self, config):
        from pipeline.core.model import seeded_weights
        from pipeline.core.trainer import train
        from pipeline.sweeping.space import Hyperparams, layout_for

        hidden, activation, optimizer, lr = config
        weights = seeded_weights(hidden, seed=0)
        layout = layout_for(self.space, Hyperparams(hidden, activation, optimizer, lr))
        return train(self.spec(activation, optimizer, lr), weights, self.data, layout=layout)

    def start(self, index: int) -> str:
        from pipeline.tracking import store

        return store.start_run(
            self.client,
            self.experiment_id,
            f"trial-{index}",
            {ROLE_TAG: "trial", STATE_TAG: "RUNNING"},
            parent_run_id=self.parent,
        )

    def params(self, config) -> dict:
        from pipeline.tracking.recording import run_params

        hidden, activation, optimizer, lr = config
        epochs, problem = self.args.epochs, self.data.problem
        decay = self.shipped_run.train.lr_decay
        return run_params(hidden, activation, optimizer, lr, decay, epochs, 0, "value", problem)

    def record(self, run_id: str, config, result) -> None:
        from pipeline.tracking import store
        from pipeline.tracking.recording import record_training

        tags = {STATE_TAG: "COMPLETE"}
        objective = self.shipped_run.objective
        params = self.params(config)
        record_training(self.client, run_id, result, self.data, params, objective, run_id[:8], tags)
        store.end_run(self.client, run_id)


def warm_up(bench: Bench) -> None:
    """Compile every graph first: compilation is not tracking."""
    started = time.perf_counter()
    for config in CONFIGS:
        bench.train_one(config)
    print(f"warm-up (XLA compile of {len(CONFIGS)} graphs): {time.perf_counter() - started:.1f} s")


def time_train_only(bench: Bench, sequence: list) -> list[float]:
    train_only = []
    for config in sequence:
        t0 = time.perf_counter()
        bench.train_one(config)
        train_only.append(time.perf_counter() - t0)
    return train_only


def time_synchronous(bench: Bench, sequence: list) -> tuple[list[float], list[float]]:
    """Per trial: (start run, train, record and close) and the recording alone."""
    synchronous, record_only = [], []
    for index, config in enumerate(sequence):
        t0 = time.perf_counter()
        run_id = bench.start(index)
        result = bench.train_one(config)
        t1 = time.perf_counter()
        bench.record(run_id, config, result)
        t2 = time.perf_counter()
        synchronous.append(t2 - t0)
        record_only.append(t2 - t1)
    return synchronous, record_only


def time_background(bench: Bench, sequence: list) -> float:
    """The whole sequence with each record handed to the recording process, drain included."""
    from pipeline.tracking.recorder import BackgroundRecorder
    from pipeline.tracking.spool import Spool, trial_record

    spool = Spool(bench.workdir / "mlruns" / "spool", bench.client.tracking_uri)
    recorder = BackgroundRecorder(spool)
    # The sweep starts the process with its first trial; a one-off, so not timed here.
    recorder.warm_up(bench.data, bench.args.epochs).result()
    t0 = time.perf_counter()
    for index, config in enumerate(sequence):
        start = time.time()
        result = bench.train_one(config)
        record = trial_record(
            experiment_id=bench.experiment_id,
            parent_run_id=bench.parent,
            study_name="bench",
            number=1000 + index,
            objective="value",
            state="COMPLETE",
            params=bench.params(config),
            result=result,
            data=bench.data,
            start=start,
        )
        recorder.submit(record)
    failed = recorder.drain()
    recorder.close()
    background_total = time.perf_counter() - t0
    if failed:
        raise SystemExit(f"{failed} background recordings failed")
    return background_total


def report(train_only, synchronous, record_only, background_total: float, n: int) -> None:
    base = statistics.mean(train_only)
    sync = statistics.mean(synchronous)
    background = background_total / n
    print(
        f"train only:               {base:.3f} s/trial (median {statistics.median(train_only):.3f})"
    )
    alone = statistics.mean(record_only)
    print(
        f"train + record, sync:       {sync:.3f} s/trial  overhead {(sync - base) / base:+.1%}"
        f"  (recording alone {alone:.3f} s)"
    )
    print(
        f"train + record, background: {background:.3f} s/trial  "
        f"overhead {(background - base) / base:+.1%}"
    )
    for name, value in (("synchronous", sync), ("background", background)):
        verdict = "meets" if (value - base) / base <= TARGET else "misses"
        print(f"target <= {TARGET:.0%} overhead: {name} {verdict} it")


def main() -> None:
    args = parse_args()
    from pipeline import entry

    entry.import_tensorflow_quietly(None)  # every graph compiled: what is measured
    from pipeline.tracking import store

    bench = Bench(args)
    sequence = CONFIGS * args.repeats
    print(
        f"{len(sequence)} trials per path, {args.epochs} epochs, report_every {args.report_every}"
    )
    warm_up(bench)
    train_only = time_train_only(bench, sequence)
    synchronous, record_only = time_synchronous(bench, sequence)
    background_total = time_background(bench, sequence)
    store.end_run(bench.client, bench.parent)
    report(train_only, synchronous, record_only, background_total, len(sequence))
    shutil.rmtree(bench.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
