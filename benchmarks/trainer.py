"""Time the compiled tape trainer against Keras `model.fit` on the blog post's configuration.

Ours: `pipeline.core.trainer.train` with the post's network ([10, 10] sigmoid, SGD lr 0.1, 10,000
full-batch epochs) on both objectives; the first call (XLA compile included) is reported apart,
then the best of `--repeats` full runs. Then a population of `--population` post networks
trained at once in one graph (per network-epoch). Keras: `model.fit` on the value objective
(the post's setup), timed over `--fit-epochs` epochs after a one-epoch warm-up, per epoch. The
floor a reader compares with: the same network, loss and SGD in one jit-compiled JAX loop
(`benchmarks/jax_floor.py`; with the `[bench]` extra, else skipped with a note).
Each ratio is printed beside its target; all are measured in this one run. Then the residual
objective's graphs per epoch on the post's network: the oscillator's (order 2, y'' + y = 0)
against an order-1 equation's (y' = cos x) on the same 200 collocation points.

    python benchmarks/trainer.py [--threads 1] [--epochs 10000] [--population 32] [--repeats 3]
    python benchmarks/trainer.py --orders-only     # only the order-2 against order-1 graph
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# fit/ours targets: one network per call, and per network-epoch in a population of 32.
TARGETS = {"value": 5000.0, "derivative": 3000.0}
POPULATION_TARGETS = {"value": 20_000.0, "derivative": 10_000.0}
ORDER_TARGET = 2.5  # the oscillator's order-2 graph per epoch against the order-1 graph's
# The same domain and points for both: the oscillator's, and an order-1 equation on it.
ORDER_PROBLEMS = {
    1: ["problem=ode", 'problem.equation="y_x = cos(x)"', 'problem.conditions=["y(0) = 0"]',
        "data.x_min=0", f"data.x_max={6.283185307179586}"],
    2: ["problem=oscillator"],
}  # fmt: skip

# The loss as the post and the shipped config have it: anchor and Sobolev weights 1, a history
# point every 50 epochs.
POST_LOSS = {"anchor_weight": 1.0, "deriv_weight": 1.0, "log_every": 50}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="TF threads (the app uses 1)")
    parser.add_argument("--population", type=int, default=32, help="networks trained at once")
    parser.add_argument("--epochs", type=int, default=10_000, help="epochs of our trainer")
    parser.add_argument("--fit-epochs", type=int, default=200, help="epochs timed for model.fit")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of ours (best kept)")
    parser.add_argument(
        "--report-every", type=int, default=1000, help="epochs per compiled chunk (as train uses)"
    )
    parser.add_argument("--orders-only", action="store_true", help="only the equations' graphs")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.orders_only:
        setup(args)
        time_orders(args)
        return
    data, start = setup(args)
    ours = time_ours(args, data, start)
    time_floor(args, data, start, ours)
    fit_us = time_model_fit(args, data)
    crowd = time_population(args, data, start)
    report(args, fit_us, ours, crowd)
    time_orders(args)


def time_orders(args: argparse.Namespace) -> dict[int, float]:
    """Microseconds per epoch of the residual objective's order-1 and order-2 graphs on the
    post's network and optimizer (best of `--repeats`), and their ratio against its target."""
    from pipeline.core.data import make_dataset
    from pipeline.core.model import seeded_weights
    from pipeline.core.specs import CONSTANT_RATE
    from pipeline.core.trainer import TrainSpec, train
    from pipeline.defaults import load

    found = {}
    for order, overrides in ORDER_PROBLEMS.items():
        s = load("train", overrides)
        data = make_dataset(s.data, s.problem, None, 0)
        spec = TrainSpec("sigmoid", "sgd", 0.1, args.epochs, CONSTANT_RATE, "residual", 0.0, 0.0,
                         50, args.report_every, condition_weight=1.0)  # fmt: skip
        weights = seeded_weights((10, 10), 0)
        started = time.perf_counter()
        first = train(spec, weights, data)
        first_seconds = time.perf_counter() - started
        run = partial(train, spec, weights, data)
        best = min(_timed(run) for _ in range(args.repeats))
        found[order] = best / args.epochs * 1e6
        print(
            f"ours  order {order} ({s.problem.equation}) on {len(data.x_colloc)} points: first "
            f"call {first_seconds:.2f} s; best of {args.repeats}: {found[order]:7.2f} us/epoch "
            f"(val_residual_mse {first.val_residual_mse:.3e})"
        )
    ratio = found[2] / found[1]
    verdict = "meets" if ratio <= ORDER_TARGET else "ABOVE"
    print(f"order 2 / order 1 per epoch = {ratio:.2f}x  [{verdict} target <= {ORDER_TARGET}x]")
    return found


def setup(args: argparse.Namespace) -> tuple:
    """TensorFlow with `--threads` threads, the post's data and its network's initial weights."""
    from pipeline.entry import import_tensorflow_quietly

    import_tensorflow_quietly(None, threads=args.threads)  # no cache: first calls compile
    with _quiet_stderr():  # Keras' own start-up chatter
        import keras
        import tensorflow as tf

    from pipeline.core.data import make_dataset
    from pipeline.core.model import build_model, initial_weights
    from pipeline.core.problem_config import shipped
    from pipeline.defaults import load

    # The post's way for both objectives: its 19 points are also the derivative's collocation grid.
    shipped_data = load("train").data
    data = make_dataset(replace(shipped_data, n_colloc=shipped_data.n_train), shipped("log"), 1.0)
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
    return data, start


def time_ours(args: argparse.Namespace, data, start) -> dict[str, float]:
    """Microseconds per epoch of one network per call, per objective (best of `--repeats`)."""
    from pipeline.core.trainer import TrainSpec, train
    from pipeline.settings import CONSTANT_RATE

    ours: dict[str, float] = {}
    for objective in ("value", "derivative"):
        spec = TrainSpec(
            activation="sigmoid",
            optimizer="sgd",
            learning_rate=0.1,
            epochs=args.epochs,
            lr_decay=CONSTANT_RATE,  # the post's, as model.fit trains
            objective=objective,
            **POST_LOSS,
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
    return ours


def time_floor(args: argparse.Namespace, data, start, ours: dict[str, float]) -> None:
    """The JAX floor per objective (`benchmarks/jax_floor.py`) beside ours, or a note."""
    from jax_floor import floor_us

    for objective in ("value", "derivative"):
        found = floor_us(data, start, objective, args.epochs, POST_LOSS["anchor_weight"],
                         args.repeats)  # fmt: skip
        if found is None:
            print("jax floor: JAX is not installed (pip install -e '.[bench]'); skipped")
            return
        floor, final_loss = found
        print(
            f"jax   {objective:<10} whole loop in one jit: {floor:7.2f} us/epoch  "
            f"(final loss {final_loss:.3e}); ours/floor = {ours[objective] / floor:.2f}x"
        )


def time_model_fit(args: argparse.Namespace, data) -> float:
    """Microseconds per epoch of Keras `model.fit` on the value objective, after a warm-up."""
    import keras
    import numpy as np

    from pipeline.core.model import build_model

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
    return fit_us


def time_population(args: argparse.Namespace, data, start) -> dict[str, float]:
    """Microseconds per network-epoch of `--population` post networks in one graph."""
    from pipeline.core.layout import Layout
    from pipeline.core.trainer import NetworkSpec, Population

    crowd: dict[str, float] = {}
    for objective in ("value", "derivative"):
        layout = Layout.exact([10, 10], "sigmoid", "sgd")
        crowd[objective], compile_s = _population_us(
            Population, layout, NetworkSpec, data, start, objective, args
        )
        print(
            f"ours  {objective:<10} population of {args.population}: "
            f"{crowd[objective]:7.2f} us per network-epoch (first call {compile_s:.2f} s)"
        )
    return crowd


def report(args: argparse.Namespace, fit_us: float, ours: dict, crowd: dict) -> None:
    """Each speed-up (fit/ours) beside its target."""
    for label, table, targets in (
        ("one network", ours, TARGETS),
        (f"population of {args.population}", crowd, POPULATION_TARGETS),
    ):
        for objective, us in table.items():
            ratio, target = fit_us / us, targets[objective]
            verdict = "meets" if ratio >= target else "BELOW"
            against = "" if objective == "value" else " (against model.fit on value)"
            print(
                f"speed-up {label:<18} {objective:<10} fit/ours = {ratio:8.0f}x{against}  "
                f"[{verdict} target {target:.0f}x]"
            )


def _population_us(population, layout, spec_type, data, start, objective, args) -> tuple:
    """Per network-epoch microseconds of `args.population` post networks trained at once."""
    from pipeline.settings import CONSTANT_RATE

    spec = spec_type("sigmoid", "sgd", 0.1, args.epochs, CONSTANT_RATE)
    weights = POST_LOSS["anchor_weight"], POST_LOSS["deriv_weight"]
    crowd = population(
        layout,
        args.population,
        data,
        objective,
        *weights,
        args.report_every,
        POST_LOSS["log_every"],
    )
    best = float("inf")
    for _ in range(args.repeats + 1):  # the first pass compiles
        for k in range(args.population):
            crowd.start(k, start, spec)
        started = time.perf_counter()
        while crowd.busy():
            crowd.step()
        best = min(best, time.perf_counter() - started)
        for k in range(args.population):
            crowd.take(k)
    return best / (args.epochs * args.population) * 1e6, crowd.compile_seconds


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
