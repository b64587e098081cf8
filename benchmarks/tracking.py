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


def main() -> None:
    args = parse_args()
    from pipeline import entry

    entry.import_tensorflow_quietly()
    from pipeline.core.data import make_dataset
    from pipeline.core.model import seeded_weights
    from pipeline.core.problems import shipped
    from pipeline.core.trainer import TrainSpec, train
    from pipeline.settings import load
    from pipeline.sweeping.space import Hyperparams, layout_for
    from pipeline.tracking import store
    from pipeline.tracking.recorder import BackgroundRecorder
    from pipeline.tracking.recording import record_training, run_params
    from pipeline.tracking.spool import Spool, trial_record

    workdir = Path(tempfile.mkdtemp(prefix="bench-tracking-"))
    uri = f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}"
    shipped_run = load("train", [f"tracking.uri={uri}", "tracking.experiment=bench"])
    data = make_dataset(shipped_run.data, shipped("log"), 1.0)
    client, experiment_id = store.connect(shipped_run.tracking)
    parent = store.start_run(client, experiment_id, "bench", {ROLE_TAG: "study"})

    def spec(activation: str, optimizer: str, lr: float) -> TrainSpec:
        return TrainSpec(activation, optimizer, lr, args.epochs, report_every=args.report_every)

    space = load("sweep").search

    def train_one(config):
        hidden, activation, optimizer, lr = config
        weights = seeded_weights(hidden, seed=0)
        layout = layout_for(space, Hyperparams(hidden, activation, optimizer, lr))
        return train(spec(activation, optimizer, lr), weights, data, layout=layout)

    def start(index: int) -> str:
        return store.start_run(
            client,
            experiment_id,
            f"trial-{index}",
            {ROLE_TAG: "trial", STATE_TAG: "RUNNING"},
            parent_run_id=parent,
        )

    def params(config) -> dict:
        hidden, activation, optimizer, lr = config
        return run_params(hidden, activation, optimizer, lr, args.epochs, 0, "value", data.problem)

    tags = {STATE_TAG: "COMPLETE"}

    def record(run_id: str, config, result) -> None:
        record_training(
            client, run_id, result, data, params(config), shipped_run.objective, run_id[:8], tags
        )
        store.end_run(client, run_id)

    sequence = CONFIGS * args.repeats
    print(
        f"{len(sequence)} trials per path, {args.epochs} epochs, report_every {args.report_every}"
    )
    started = time.perf_counter()
    for config in CONFIGS:  # compile every graph first: compilation is not tracking
        train_one(config)
    print(f"warm-up (XLA compile of {len(CONFIGS)} graphs): {time.perf_counter() - started:.1f} s")

    train_only, record_only = [], []
    for config in sequence:
        t0 = time.perf_counter()
        train_one(config)
        train_only.append(time.perf_counter() - t0)

    synchronous = []
    for index, config in enumerate(sequence):
        t0 = time.perf_counter()
        run_id = start(index)
        result = train_one(config)
        t1 = time.perf_counter()
        record(run_id, config, result)
        t2 = time.perf_counter()
        synchronous.append(t2 - t0)
        record_only.append(t2 - t1)

    recorder = BackgroundRecorder(Spool(workdir / "mlruns" / "spool", client.tracking_uri))
    # The sweep starts the process with its first trial; a one-off, so not timed here.
    recorder.warm_up(data, args.epochs).result()
    t0 = time.perf_counter()
    for index, config in enumerate(sequence):
        start = time.time()
        result = train_one(config)
        record = trial_record(
            experiment_id=experiment_id,
            parent_run_id=parent,
            study_name="bench",
            number=1000 + index,
            objective="value",
            state="COMPLETE",
            params=params(config),
            result=result,
            data=data,
            start=start,
        )
        recorder.submit(record)
    failed = recorder.drain()
    recorder.close()
    background_total = time.perf_counter() - t0
    if failed:
        raise SystemExit(f"{failed} background recordings failed")
    store.end_run(client, parent)

    base = statistics.mean(train_only)
    sync = statistics.mean(synchronous)
    background = background_total / len(sequence)
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
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
