"""Population training: K networks in one compiled graph, each exactly as if trained alone.

Slots differ in depth, width, activation, optimizer, learning rate and length; slots are
refilled when their network finishes, stopped early (pruning) or lost to divergence without
disturbing the others.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import train_spec

from pipeline.core.data import Dataset
from pipeline.core.graph import graphs_compiled
from pipeline.core.layout import Layout
from pipeline.core.model import seeded_weights
from pipeline.core.trainer import Population, TrainResult, TrainSpec, train
from pipeline.settings import CONSTANT_RATE, LrDecay

LAYOUT = Layout(3, 24, ("sigmoid", "tanh", "softplus"), ("sgd", "adam"))
REPORT_EVERY = 100
# (hidden, activation, optimizer, learning rate, epochs): mixed depths, rules and lengths.
NETWORKS = [
    ((10, 10), "sigmoid", "sgd", 0.1, 300),
    ((24,), "tanh", "adam", 1e-2, 200),
    ((5, 17, 8), "softplus", "adam", 3e-3, 300),
    ((12, 6), "tanh", "sgd", 0.01, 250),  # a short last chunk
]
LATE = ((9, 9, 9), "sigmoid", "adam", 1e-2, 200)  # refills the first slot that frees
ADAM_DECAY = LrDecay(fraction=0.5, final=0.05)
# Learning rates stay where training is smooth: at an unstable step (SGD 0.05 on the
# derivative, say) float rounding in the padding is amplified and no tolerance holds.


def _spec(net: tuple, objective: str) -> TrainSpec:
    _, activation, optimizer, lr, epochs = net
    # Schedules are per slot too: the Adam networks decay their rates, the SGD ones keep theirs.
    decay = ADAM_DECAY if optimizer == "adam" else CONSTANT_RATE
    return train_spec(activation, optimizer, lr, epochs, objective=objective, log_every=10,
                     report_every=REPORT_EVERY, lr_decay=decay)  # fmt: skip


def _population(data: Dataset, objective: str, stop: dict[int, int] | None = None) -> dict:
    """Train NETWORKS (then LATE in the first freed slot) in one population of 4 slots.

    `stop` maps a network's index to the epoch after which it is stopped (pruned).
    Returns {network index: result}, LATE under index len(NETWORKS).
    """
    stop = stop or {}
    weights = (1.0, 1.0)  # anchor and Sobolev weights
    population = Population(LAYOUT, len(NETWORKS), data, objective, *weights, REPORT_EVERY, 10)
    owner = {}
    for k, net in enumerate(NETWORKS):
        population.start(k, seeded_weights(net[0], seed=k), _spec(net, objective))
        owner[k] = k
    results: dict[int, TrainResult] = {}
    queue = [len(NETWORKS)]
    while population.busy():
        for k, report in population.step().items():
            if report.epoch >= stop.get(owner[k], 10**9):
                population.stop(k)
        for k in list(owner):
            if population.finished(k):
                results[owner.pop(k)] = population.take(k)
                if queue:
                    index = queue.pop()
                    population.start(k, seeded_weights(LATE[0], seed=index), _spec(LATE, objective))
                    owner[k] = index
    return results


def _alone(data: Dataset, objective: str, index: int, stop_at: int | None = None) -> TrainResult:
    net = NETWORKS[index] if index < len(NETWORKS) else LATE

    def stop(report) -> bool:
        return stop_at is not None and report.epoch >= stop_at

    return train(_spec(net, objective), seeded_weights(net[0], seed=index), data, on_report=stop)


def _assert_same(got: TrainResult, alone: TrainResult) -> None:
    np.testing.assert_array_equal(got.history_epochs, alone.history_epochs)
    # Measured: slots match their lone runs to ~1e-6 relative (summation order in padding).
    np.testing.assert_allclose(got.history_loss, alone.history_loss, rtol=2e-4, atol=1e-7)
    assert [r.epoch for r in got.reports] == [r.epoch for r in alone.reports]
    assert got.val_value_mse == pytest.approx(alone.val_value_mse, rel=2e-3)
    assert got.val_deriv_mse == pytest.approx(alone.val_deriv_mse, rel=2e-3)
    assert (got.epochs_run, got.stopped_early) == (alone.epochs_run, alone.stopped_early)
    for a, b in zip(got.weights, alone.weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("objective", ["value", "derivative"])
def test_each_slot_equals_training_its_network_alone(dataset: Dataset, objective: str) -> None:
    results = _population(dataset, objective)
    assert sorted(results) == list(range(len(NETWORKS) + 1))
    for index, result in results.items():
        _assert_same(result, _alone(dataset, objective, index))
        assert result.final_loss < result.history_loss[0]


def test_stopping_one_slot_leaves_the_others_alone(dataset: Dataset) -> None:
    before = graphs_compiled()
    results = _population(dataset, "value", stop={2: 100})
    assert results[2].stopped_early and results[2].epochs_run == 100
    _assert_same(results[2], _alone(dataset, "value", 2, stop_at=100))
    for index in (0, 1, 3, len(NETWORKS)):
        _assert_same(results[index], _alone(dataset, "value", index))
    assert graphs_compiled() == before  # the same graph as the first test's value population


def test_a_diverging_slot_stops_alone(dataset: Dataset) -> None:
    population = Population(
        LAYOUT, 2, dataset, "value", 1.0, 1.0, report_every=REPORT_EVERY, log_every=1
    )
    population.start(0, seeded_weights((10, 10), 0), train_spec("sigmoid", "sgd", 1e6, 300))
    population.start(1, seeded_weights((10, 10), 0), train_spec("sigmoid", "sgd", 0.1, 300))
    while population.busy():
        population.step()
    diverged, healthy = population.take(0), population.take(1)
    assert diverged.diverged_at is not None and diverged.epochs_run == diverged.diverged_at < 300
    assert not np.isfinite(diverged.history_loss[-1])
    assert np.isfinite(diverged.history_loss[:-1]).all()
    assert healthy.diverged_at is None and healthy.epochs_run == 300
    alone = train(train_spec("sigmoid", "sgd", 0.1, 300, report_every=REPORT_EVERY, log_every=1),
                  seeded_weights((10, 10), 0), dataset)  # fmt: skip
    np.testing.assert_allclose(healthy.history_loss, alone.history_loss, rtol=2e-4)
    assert population.free() == [0, 1] and not population.busy()


def test_a_graph_of_one_update_rule_refuses_the_other(dataset: Dataset) -> None:
    # A layout of one rule compiles only that rule (a single run's graph); a network that
    # needs the other is refused rather than trained with the wrong one.
    sgd_only = Layout(2, 10, ("sigmoid",), ("sgd",))
    assert sgd_only.holds((10, 10), "sigmoid", "sgd")
    assert not sgd_only.holds((10, 10), "sigmoid", "adam")
    crowd = Population(sgd_only, 1, dataset, "value", 0.0, 0.0, REPORT_EVERY, 50)
    adam = train_spec("sigmoid", "adam", 1e-3, 100)
    with pytest.raises(ValueError, match="optimizer adam"):
        crowd.start(0, seeded_weights((10, 10), 0), adam)
    assert crowd.free() == [0]
