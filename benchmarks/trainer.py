"""Time the compiled tape trainer against Keras `model.fit` on the blog post's configuration.

Ours: `pipeline.trainer.train` with the post's network ([10, 10] sigmoid, SGD lr 0.1, 10,000
full-batch epochs) on both objectives; the first call (XLA compile included) is reported apart,
then the best of `--repeats` full runs. Keras: `model.fit` on the value objective (the post's
setup), timed over `--fit-epochs` epochs after a one-epoch warm-up and scaled per epoch.

    python benchmarks/trainer.py [--threads N] [--epochs 10000] [--fit-epochs 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TARGET_SPEEDUP = 800.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads", type=int, default=None, help="cap TF's thread pools (default: TF's own)"
    )
    parser.add_argument("--epochs", type=int, default=10_000, help="epochs of our trainer")
    parser.add_argument("--fit-epochs", type=int, default=200, help="epochs timed for model.fit")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of ours (best kept)")
    parser.add_argument(
        "--report-every", type=int, default=1000, help="epochs per compiled chunk (as train uses)"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    with _quiet_stderr():  # TF's C++ start-up chatter (CUDA probing, oneDNN notes)
        # Thread pools can only be set before TensorFlow runs its first op.
        from pipeline.trainer import TrainSpec, limit_threads, train

        if args.threads is not None:
            limit_threads(args.threads)

        import keras
        import numpy as np
        import tensorflow as tf

        tf.constant(0.0)  # the device probe happens on first use

    from pipeline.config import DataConfig
    from pipeline.data import make_dataset
    from pipeline.model import build_model, initial_weights
    from pipeline.problems import shipped

    # The post's way for both objectives: its 19 points are also the derivative's collocation grid.
    data = make_dataset(DataConfig(n_colloc=DataConfig().n_train), shipped("log"), 1.0)
    start = initial_weights(build_model([10, 10], "sigmoid", seed=0))
    intra = tf.config.threading.get_intra_op_parallelism_threads()
    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs, "
        f"threads: {intra or 'TF default'}"
    )
    print(
        f"post's config: [10, 10] sigmoid, SGD lr 0.1, {len(data.x_train)} points, full batch; "
        f"ours: {args.epochs} epochs in chunks of {args.report_every}"
    )

    ours: dict[str, float] = {}
    for objective in ("value", "derivative"):
        spec = TrainSpec(
            activation="sigmoid",
            optimizer="sgd",
            learning_rate=0.1,
            epochs=args.epochs,
            objective=objective,
            report_every=args.report_every,
        )
        started = time.perf_counter()
        first = train(spec, start, data)
        first_seconds = time.perf_counter() - started
        best = min(_timed(lambda spec=spec: train(spec, start, data)) for _ in range(args.repeats))
        ours[objective] = best / args.epochs * 1e6
        print(
            f"ours  {objective:<10} first call (compile incl.) {first_seconds:6.2f} s; "
            f"best of {args.repeats}: {best:.3f} s = {ours[objective]:7.2f} us/epoch  "
            f"(final loss {first.final_loss:.3e}, val_value_mse {first.val_value_mse:.3e}, "
            f"val_deriv_mse {first.val_deriv_mse:.3e})"
        )

    model = build_model([10, 10], "sigmoid", seed=0)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse")
    fit_args = {"batch_size": len(data.x_train), "verbose": 0}
    model.fit(data.x_train, data.y_train, epochs=1, **fit_args)  # warm-up: trace the step
    started = time.perf_counter()
    history = model.fit(data.x_train, data.y_train, epochs=args.fit_epochs, **fit_args)
    fit_seconds = time.perf_counter() - started
    fit_us = fit_seconds / args.fit_epochs * 1e6
    print(
        f"keras value      model.fit, {args.fit_epochs} epochs after warm-up: {fit_seconds:.2f} s "
        f"= {fit_us:9.1f} us/epoch  (10,000 epochs ~ {fit_us * 1e4 / 1e6:.0f} s; "
        f"loss {np.asarray(history.history['loss'])[-1]:.3e} at epoch {args.fit_epochs + 1})"
    )
    print("keras derivative model.fit does not apply (the loss needs f'(x) from an inner tape)")

    for objective, us in ours.items():
        ratio = fit_us / us
        verdict = "meets" if ratio >= TARGET_SPEEDUP else "BELOW"
        against = "" if objective == "value" else " (against model.fit on value)"
        print(
            f"speed-up {objective:<10} fit/ours = {ratio:7.0f}x{against}  "
            f"[{verdict} target {TARGET_SPEEDUP:.0f}x]"
        )


def _timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the duration (C++ logging bypasses Python)."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


if __name__ == "__main__":
    main()
