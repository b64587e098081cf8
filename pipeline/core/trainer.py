"""GradientTape training of K networks at once, one compiled graph per kind of loss.

A `Population` holds K slots; each slot trains its own network (depth, widths, activation,
optimizer, learning rate, initial weights, epoch count) inside one compiled graph whose
`Layout` is the largest network it serves. Epochs run in a graph `while_loop` in chunks of
`report_every`; between chunks every slot reports, and a caller may stop a slot (pruning) or
refill a finished one with a new network. A slot's result equals training that network alone.
The graph (`pipeline.core.graph`) is cached per (activations, update rules, slope term): a
sweep compiles one per layout and objective kind. `train` runs one network (a population of
one). Imports neither MLflow nor Optuna.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from pipeline.core import compile_cache, objectives
from pipeline.core.data import Dataset
from pipeline.core.graph import compiled_chunk, note_first_call
from pipeline.core.layout import Layout, pack, unpack
from pipeline.core.optimizers import learning_rates
from pipeline.core.results import Report, TrainResult
from pipeline.core.specs import LrDecay


@dataclass(frozen=True)
class NetworkSpec:
    """What one slot trains besides its initial weights: activation, optimizer, rate and its
    schedule, epochs, and (residual objective) its weight of the conditions."""

    activation: str
    optimizer: str
    learning_rate: float
    epochs: int
    lr_decay: LrDecay
    # The residual objective's weight of the conditions for this network (a searched value);
    # None: the population's.
    condition_weight: float | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class TrainSpec(NetworkSpec):
    """One network trained alone: its slot's settings, the loss and the report schedule (a
    population holds the last three for all its slots)."""

    objective: str
    anchor_weight: float
    deriv_weight: float
    log_every: int
    report_every: int


@dataclass
class _Slot:
    """Python-side bookkeeping of one network in training (`val`: the last validation)."""

    hidden: tuple[int, ...]
    lr: float
    decay: LrDecay
    adam: bool
    epochs: int
    done: int = 0
    chunks: int = 0
    losses: list[np.ndarray] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)
    diverged_at: int | None = None
    stopped: bool = False
    started: float = field(default_factory=time.perf_counter)
    val: tuple = (np.nan, np.nan, None, None, np.nan, np.nan, None)

    @property
    def finished(self) -> bool:
        return self.stopped or self.diverged_at is not None or self.done >= self.epochs


class Population:
    """K slots of networks trained together, chunk by chunk, by one compiled graph."""

    def __init__(
        self,
        layout: Layout,
        size: int,
        data: Dataset,
        objective: str,
        anchor_weight: float,
        deriv_weight: float,
        report_every: int,
        log_every: int,
        condition_weight: float = 0.0,
    ) -> None:
        chosen = objectives.get(objective)
        weights = chosen.weights(anchor_weight, deriv_weight, condition_weight)
        kind = data.problem.spec if chosen.residual else weights.needs_slope
        self._key = (layout.activations, layout.optimizers, kind)
        self._fn, self._call = compiled_chunk(*self._key), None
        self.layout, self.size, self.data = layout, size, data
        self.report_every, self.log_every = report_every, log_every
        self._colloc, self._residual = chosen.points == "colloc", chosen.residual
        self._loss_w_default = np.array([weights.value, weights.slope, weights.anchor])
        self._loss_w = np.tile(self._loss_w_default, (size, 1))
        self._slots: list[_Slot | None] = [None] * size
        shapes = layout.shapes(size)
        self._w = [np.zeros(s, np.float32) for s in shapes]
        self._moments = [np.zeros(s, np.float32) for s in shapes * 2]
        self._masks = [np.zeros(shapes[i], np.float32) for i in (0, 2, 4)]
        self._active = np.zeros((size, layout.depth - 1), np.float32)
        self._act = np.zeros(size, np.int32)
        val = [data.x_val, data.y_val, data.dy_val]
        self._val = [tf.constant(np.broadcast_to(val[0], (size, *val[0].shape)))] + [
            tf.constant(a[None]) for a in val[1:]
        ]
        self.compile_seconds = 0.0

    def free(self) -> list[int]:
        """Slots holding no network (never filled, or taken)."""
        return [k for k, s in enumerate(self._slots) if s is None]

    def busy(self) -> list[int]:
        """Slots with a network still training."""
        return [k for k, s in enumerate(self._slots) if s is not None and not s.finished]

    def start(self, k: int, weights: Sequence[np.ndarray], spec: NetworkSpec) -> None:
        """Put a network (its initial weights) and its optimizer settings into free slot `k`."""
        assert self._slots[k] is None, f"slot {k} is taken"
        if spec.optimizer not in self.layout.optimizers:
            raise ValueError(f"optimizer {spec.optimizer} is not one of {self.layout}'s")
        packed = pack(self.layout, weights, spec.activation)
        for stack, value in zip(self._w, packed.weights, strict=True):
            stack[k] = value
        for stack in self._moments:
            stack[k] = 0.0
        for stack, value in zip(self._masks, packed.masks, strict=True):
            stack[k] = value
        self._active[k], self._act[k] = packed.active, packed.activation
        self._loss_w[k] = self._loss_w_default
        if spec.condition_weight is not None and self._residual:
            self._loss_w[k, 2] = spec.condition_weight
        hidden = tuple(int(np.shape(b)[0]) for b in weights[1:-2:2])
        adam = spec.optimizer == "adam"
        self._slots[k] = _Slot(hidden, spec.learning_rate, spec.lr_decay, adam, spec.epochs)

    def stop(self, k: int) -> None:
        """End slot `k`'s training early (pruned) before its planned epochs."""
        slot = self._slots[k]
        if slot is not None and not slot.finished:
            slot.stopped = True

    def _points(self, slot: _Slot | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self._colloc:
            return self.data.x_train, self.data.y_train, self.data.dy_train
        return self.data.collocation(slot.chunks if slot is not None else 0)

    def _inputs(self) -> list:
        slots = self._slots
        n = [
            0 if s is None or s.finished else min(self.report_every, s.epochs - s.done)
            for s in slots
        ]
        points = [self._points(s) for s in slots]
        anchor = np.full((1, 1), self.data.anchor_x, np.float32)
        x = np.stack([np.concatenate([p[0], anchor]) for p in points])
        return [
            self._w,
            self._moments,
            (self._masks, self._active, self._act),
            self._rates(),
            np.array([bool(s and s.adam) for s in slots]),
            np.array([s.done if s else 0 for s in slots], np.int32),
            np.array(n, np.int32),
            tf.constant(self.report_every),
            self._loss_w.astype(np.float32),
            x,
            np.stack([p[1] for p in points]),
            np.stack([p[2] for p in points]),
            np.float32(self.data.anchor_y),
            self._val,
        ]

    def _rates(self) -> np.ndarray:
        """(K, report_every): each slot's learning rate at each epoch of the coming chunk."""
        rates = np.zeros((self.size, self.report_every), np.float32)
        for k, s in enumerate(self._slots):
            if s is not None and not s.finished:
                rates[k] = learning_rates(s.lr, s.decay, s.epochs, s.done + 1, self.report_every)
        return rates

    def step(self) -> dict[int, Report]:
        """Train every busy slot one chunk; return each one's report (its slot then may be
        finished: planned epochs done or diverged)."""
        busy = self.busy()
        if not busy:
            return {}
        args = self._inputs()
        n = args[6]
        if self._call is None:  # looked up once: the concrete function dispatches faster
            started = time.perf_counter()
            self._call = self._fn.get_concrete_function(*args)
            out = self._call(*args)
            self.compile_seconds += time.perf_counter() - started
            note_first_call(self._key, self.compile_seconds)
            compile_cache.publish()
        else:
            out = self._call(*args)
        w, moments, history, alive, f, df, res, scores = out
        self._w = [t.numpy() for t in w]
        self._moments = [t.numpy() for t in moments]
        history, alive = history.numpy(), alive.numpy()
        val_value, val_deriv, res_mse, conditions = (t.numpy() for t in scores)
        if not self._residual:
            res_mse = conditions = np.full(self.size, np.nan)
        f, df, res = f.numpy(), df.numpy(), res.numpy()
        reports = {}
        for k in busy:
            slot = self._slots[k]
            losses = history[: n[k], k]
            if not alive[k]:  # stopped at the first non-finite loss; the rest is unset
                losses = losses[: int(np.argmin(np.isfinite(losses))) + 1]
            slot.losses.append(losses)
            slot.done += len(losses)
            slot.chunks += 1
            slot.val = (float(val_value[k]), float(val_deriv[k]), f[k].ravel(), df[k].ravel(),
                        float(res_mse[k]), float(conditions[k]), res[k].ravel())  # fmt: skip
            if not alive[k]:
                slot.diverged_at = slot.done
                continue
            reports[k] = Report(slot.done, float(losses[-1]), *slot.val[:2], *slot.val[4:6])
            slot.reports.append(reports[k])
        return reports

    def finished(self, k: int) -> bool:
        """Whether slot `k`'s network is done (planned epochs, stopped, or diverged)."""
        slot = self._slots[k]
        return slot is not None and slot.finished

    def take(self, k: int) -> TrainResult:
        """The finished slot's result; the slot becomes free."""
        slot = self._slots[k]
        assert slot is not None and slot.finished, f"slot {k} is not finished"
        self._slots[k] = None
        losses = np.concatenate(slot.losses) if slot.losses else np.zeros(0, np.float32)
        epochs = _history_epochs(slot.done, self.log_every)
        weights = unpack([stack[k] for stack in self._w], slot.hidden)
        stopped = slot.stopped and slot.diverged_at is None and slot.done < slot.epochs
        return TrainResult(
            history_epochs=epochs,
            history_loss=losses[epochs - 1],
            reports=slot.reports,
            val_value_mse=slot.val[0],
            val_deriv_mse=slot.val[1],
            epochs_run=slot.done,
            diverged_at=slot.diverged_at,
            stopped_early=stopped,
            weights=weights,
            val_f=slot.val[2],
            val_df=slot.val[3],
            seconds=time.perf_counter() - slot.started,
            val_residual_mse=slot.val[4],
            condition_sse=slot.val[5],
            val_residual=slot.val[6] if self._residual else None,
        )


def _history_epochs(epochs_run: int, log_every: int) -> np.ndarray:
    epochs = np.arange(1, epochs_run + 1)
    keep = (epochs % log_every == 0) | (epochs == 1) | (epochs == epochs_run)
    return epochs[keep]


def train(
    spec: TrainSpec,
    weights: Sequence[np.ndarray],
    data: Dataset,
    on_report: Callable[[Report], bool] | None = None,
    layout: Layout | None = None,
) -> TrainResult:
    """Train one network from `weights` ([kernel0, bias0, ...]); return history and metrics.

    `on_report` is called after every chunk; returning True stops training there (pruning).
    The loop also stops at the first non-finite loss and records that epoch in `diverged_at`.
    `layout` (default: the network's own) lets a larger graph, shared with other networks,
    train it; results are unchanged.
    """
    hidden = [int(np.shape(b)[0]) for b in weights[1:-2:2]]
    layout = layout or Layout.exact(hidden, spec.activation, spec.optimizer)
    s = spec
    population = Population(layout, 1, data, s.objective, s.anchor_weight, s.deriv_weight,
                            s.report_every, s.log_every, s.condition_weight or 0.0)  # fmt: skip
    population.start(0, weights, spec)
    while not population.finished(0):
        report = population.step().get(0)
        if report is not None and on_report is not None and on_report(report):
            population.stop(0)
    return population.take(0)
