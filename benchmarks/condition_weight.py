"""How the residual objective's condition weight moves the error against the exact solution.

Per shipped equation and weight: the post's network and optimizer (the baseline, trial 0:
[10, 10] sigmoid, SGD lr 0.1) and a 32-32 tanh network with Adam (lr 0.003, the sweep's decay),
each trained 10,000 epochs on MSE(residual) + weight * sum of squared condition errors; printed:
the relative L2 error `val_l2re` against the exact solution. How `objective.condition_weight`'s
default (the baseline's) and `search.condition_weight`'s range were chosen.

    python benchmarks/condition_weight.py [--weights 1 10 100 1000] [--epochs 10000]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EQUATIONS = ("logistic", "oscillator", "poisson", "gauss")
NETWORKS = {  # name: (hidden, activation, optimizer, learning rate, decay of the sweep's trials)
    "post sgd": ((10, 10), "sigmoid", "sgd", 0.1, False),
    "32-32 tanh adam": ((32, 32), "tanh", "adam", 0.003, True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", default=list(EQUATIONS))
    parser.add_argument("--weights", nargs="+", type=float, default=[1.0, 10.0, 100.0, 1000.0])
    parser.add_argument("--epochs", type=int, default=10_000)
    args = parser.parse_args()

    from pipeline.entry import import_tensorflow_quietly

    import_tensorflow_quietly(None)
    from pipeline.core.data import make_dataset
    from pipeline.core.model import seeded_weights
    from pipeline.core.specs import CONSTANT_RATE
    from pipeline.core.trainer import TrainSpec, train
    from pipeline.defaults import load
    from pipeline.tracking.ode_plots import L2RE, residual_metrics

    decay = load("sweep").train.lr_decay
    print(f"val_l2re after {args.epochs} epochs (nan: diverged)")
    print(f"{'problem':<12}{'network':<18}" + "".join(f"{f'w={w:g}':>11}" for w in args.weights))
    for problem in args.problems:
        s = load("train", [f"problem={problem}"])
        data = make_dataset(s.data, s.problem, None, 0)
        for name, (hidden, activation, optimizer, rate, decays) in NETWORKS.items():
            row = f"{problem:<12}{name:<18}"
            for weight in args.weights:
                spec = TrainSpec(activation, optimizer, rate, args.epochs,
                                 decay if decays else CONSTANT_RATE, "residual", 0.0, 0.0, 50,
                                 1000, condition_weight=weight)  # fmt: skip
                result = train(spec, seeded_weights(hidden, 0), data)
                l2re = residual_metrics(result, data).get(L2RE, float("nan"))
                l2re = float("nan") if result.diverged_at is not None else l2re
                row += f"{l2re:>11.2e}"
            print(row, flush=True)


if __name__ == "__main__":
    main()
