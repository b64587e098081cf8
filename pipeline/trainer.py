"""The compiled GradientTape training loop: K networks at once, one XLA graph per kind of loss.

A `Population` holds K slots; each slot trains its own network (depth, widths, activation,
optimizer, learning rate, initial weights, epoch count) inside one compiled graph whose
`Layout` is the largest network it serves. Epochs run in a graph `while_loop` in chunks of
`report_every`; between chunks every slot reports, and a caller may stop a slot (pruning) or
refill a finished one with a new network. A slot's result equals training that network alone.
Graphs are cached per (activations, slope term): a sweep compiles one per objective kind.
`train` runs one network (a population of one). Imports neither MLflow nor Optuna.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from pipeline import objectives
from pipeline.data import Dataset
from pipeline.layout import Layout, pack, unpack
from pipeline.losses import forward, slot_losses, validation_errors, value_and_slope
from pipeline.optimizers import apply_gradients
from pipeline.results import Report, TrainResult


@dataclass(frozen=True)
class TrainSpec:
    """One network's training besides its initial weights and the data."""

    activation: str
    optimizer: str
    learning_rate: float
    epochs: int
    objective: str = "value"
    anchor_weight: float = 1.0
    deriv_weight: float = 1.0
    log_every: int = 50
    report_every: int = 500


@functools.cache
def compiled_chunk(activations: tuple[str, ...], slope: bool) -> Callable:
    """The graph that runs up to `capacity` epochs of every slot, then scores validation.

    Cached per (activations it can switch between, whether the loss has a slope term); XLA
    compiles it once per set of input shapes, i.e. per (layout, population size, points).
    """

    def losses_of(weights, net, x, y, dy, y0, loss_weights):
        if slope:
            f, df = value_and_slope(weights, *net, x, activations)
        else:
            f, df = forward(weights, *net, x, activations), None
        return slot_losses(f, df, y, dy, y0, loss_weights)

    def chunk(weights, moments, net, lr, use_adam, done, n, capacity, loss_w, x, y, dy, y0, val):
        # XLA fixes the history buffer's size at compile time: `capacity` (report_every) stays
        # the same for every call; each slot runs its own n[k] <= capacity epochs.
        history = tf.TensorArray(tf.float32, size=capacity, element_shape=n.shape)

        def keep_going(i, w, s, history, alive):
            return tf.reduce_any(tf.logical_and(alive, i < n))

        def epoch(i, w, s, history, alive):
            live = tf.logical_and(alive, i < n)
            with tf.GradientTape() as tape:
                tape.watch(w)
                loss = losses_of(w, net, x, y, dy, y0, loss_w)
                total = tf.reduce_sum(tf.where(live, loss, 0.0))
            grads = tape.gradient(total, w, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            finite = tf.math.is_finite(loss)
            step = tf.cast(done + i + 1, tf.float32)
            update = tf.logical_and(live, finite)
            w, s = apply_gradients(w, grads, s, lr, step, use_adam, update)
            alive = tf.logical_and(alive, tf.logical_or(finite, tf.logical_not(live)))
            return i + 1, w, s, history.write(i, loss), alive

        start = (tf.constant(0), list(weights), list(moments), history, n >= 0)
        _, weights, moments, history, alive = tf.while_loop(keep_going, epoch, start)
        f, df = value_and_slope(weights, *net, val[0], activations)
        val_value, val_deriv = validation_errors(f, df, val[1], val[2])
        return weights, moments, history.stack(), alive, f, df, val_value, val_deriv

    return tf.function(chunk, jit_compile=True, autograph=False)


def graphs_compiled() -> int:
    """How many graphs this process has traced for training (one XLA compile each)."""
    return sum(
        fn.experimental_get_tracing_count() for fn in (compiled_chunk(*key) for key in _KEYS_SEEN)
    )


_KEYS_SEEN: set[tuple[tuple[str, ...], bool]] = set()


@dataclass
class _Slot:
    """Python-side bookkeeping of one network in training."""

    hidden: tuple[int, ...]
    lr: float
    adam: bool
    epochs: int
    done: int = 0
    chunks: int = 0
    losses: list[np.ndarray] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)
    diverged_at: int | None = None
    stopped: bool = False
    started: float = field(default_factory=time.perf_counter)
    val: tuple = (np.nan, np.nan, None, None)

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
        anchor_weight: float = 1.0,
        deriv_weight: float = 1.0,
        report_every: int = 500,
        log_every: int = 50,
    ) -> None:
        chosen = objectives.get(objective)
        weights = chosen.weights(anchor_weight, deriv_weight)
        key = (layout.activations, weights.needs_slope)
        _KEYS_SEEN.add(key)
        self._fn, self._call = compiled_chunk(*key), None
        self.layout, self.size, self.data = layout, size, data
        self.report_every, self.log_every = report_every, log_every
        self._colloc = chosen.points == "colloc"
        self._loss_w = np.tile([[weights.value, weights.slope, weights.anchor]], (size, 1))
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

    def start(self, k: int, weights: Sequence[np.ndarray], spec: TrainSpec) -> None:
        """Put a network (its initial weights) and its optimizer settings into free slot `k`."""
        assert self._slots[k] is None, f"slot {k} is taken"
        packed = pack(self.layout, weights, spec.activation)
        for stack, value in zip(self._w, packed.weights, strict=True):
            stack[k] = value
        for stack in self._moments:
            stack[k] = 0.0
        for stack, value in zip(self._masks, packed.masks, strict=True):
            stack[k] = value
        self._active[k], self._act[k] = packed.active, packed.activation
        hidden = tuple(int(np.shape(b)[0]) for b in weights[1:-2:2])
        self._slots[k] = _Slot(hidden, spec.learning_rate, spec.optimizer == "adam", spec.epochs)

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
            np.array([s.lr if s else 0.0 for s in slots], np.float32),
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
        else:
            out = self._call(*args)
        w, moments, history, alive, f, df, val_value, val_deriv = out
        self._w = [t.numpy() for t in w]
        self._moments = [t.numpy() for t in moments]
        history, alive = history.numpy(), alive.numpy()
        val_value, val_deriv = val_value.numpy(), val_deriv.numpy()
        f, df = f.numpy(), df.numpy()
        reports = {}
        for k in busy:
            slot = self._slots[k]
            losses = history[: n[k], k]
            if not alive[k]:  # stopped at the first non-finite loss; the rest is unset
                losses = losses[: int(np.argmin(np.isfinite(losses))) + 1]
            slot.losses.append(losses)
            slot.done += len(losses)
            slot.chunks += 1
            slot.val = (float(val_value[k]), float(val_deriv[k]), f[k].ravel(), df[k].ravel())
            if not alive[k]:
                slot.diverged_at = slot.done
                continue
            reports[k] = Report(slot.done, float(losses[-1]), slot.val[0], slot.val[1])
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
    layout = layout or Layout.exact(hidden, spec.activation)
    population = Population(
        layout,
        1,
        data,
        spec.objective,
        spec.anchor_weight,
        spec.deriv_weight,
        spec.report_every,
        spec.log_every,
    )
    population.start(0, weights, spec)
    while not population.finished(0):
        report = population.step().get(0)
        if report is not None and on_report is not None and on_report(report):
            population.stop(0)
    return population.take(0)
