"""The compiled training chunk: up to `report_every` epochs of K slots in one XLA graph.

Epochs run in a graph `while_loop` (no Python per epoch); every slot's loss, update and stop
(planned epochs, divergence) are data, so one graph serves every network of a layout. Graphs
are cached per (activations, update rules, slope term); XLA compiles one per set of input
shapes. Imports neither MLflow nor Optuna.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import tensorflow as tf

from pipeline.core import residual
from pipeline.core.losses import forward, slot_losses, validation_errors, value_and_slope
from pipeline.core.optimizers import apply_gradients
from pipeline.core.specs import EquationSpec

Kind = bool | EquationSpec  # a target loss with or without a slope term, or an equation's


@functools.cache
def compiled_chunk(activations: tuple[str, ...], rules: tuple[str, ...], slope: Kind) -> Callable:
    """The graph that runs up to `capacity` epochs of every slot, then scores validation.

    Cached per (activations it can switch between, update rules its slots use, whether the
    loss has a slope term, or the equation whose residual it is); XLA compiles it once per set
    of input shapes, i.e. per (layout, population size, points).
    """
    equation = slope if isinstance(slope, EquationSpec) else None

    def losses_of(weights, net, x, y, dy, y0, loss_weights):
        if equation is not None:
            return residual.slot_losses(weights, net, x, activations, equation, loss_weights)
        if slope:
            f, df = value_and_slope(weights, *net, x, activations)
        else:
            f, df = forward(weights, *net, x, activations), None
        return slot_losses(f, df, y, dy, y0, loss_weights)

    def chunk(weights, moments, net, rates, use_adam, done, n, capacity, loss_w, x, y, dy, y0, val):
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
            lr = tf.gather(rates, i, axis=1)  # (K, capacity): each slot's rate per epoch
            w, s = apply_gradients(w, grads, s, lr, step, use_adam, update, rules)
            alive = tf.logical_and(alive, tf.logical_or(finite, tf.logical_not(live)))
            return i + 1, w, s, history.write(i, loss), alive

        start = (tf.constant(0), list(weights), list(moments), history, n >= 0)
        _, weights, moments, history, alive = tf.while_loop(keep_going, epoch, start)
        if equation is None:
            f, df = value_and_slope(weights, *net, val[0], activations)
            res = tf.zeros_like(f)
            res_mse = conditions = tf.zeros_like(f[:, 0, 0])
        else:
            f, df, res, res_mse, conditions = residual.validation(
                weights, net, val[0], activations, equation
            )
        val_value, val_deriv = validation_errors(f, df, val[1], val[2])
        scores = (val_value, val_deriv, res_mse, conditions)
        return weights, moments, history.stack(), alive, f, df, res, scores

    return tf.function(chunk, jit_compile=True, autograph=False)


def graphs_compiled() -> int:
    """How many graphs this process has traced for training (one XLA compile each)."""
    return sum(
        fn.experimental_get_tracing_count() for fn in (compiled_chunk(*key) for key in _KEYS_SEEN)
    )


_KEYS_SEEN: set[tuple[tuple[str, ...], tuple[str, ...], Kind]] = set()
_FIRST_CALLS = [0.0]


def compile_seconds() -> float:
    """Seconds this process spent in first calls of its training graphs (trace, compile, one
    chunk): an upper bound on compilation, for the benchmarks' compile share."""
    return _FIRST_CALLS[0]


def note_first_call(key: tuple[tuple[str, ...], tuple[str, ...], Kind], seconds: float) -> None:
    """Count a graph's key and the seconds of its first call (trace, compile, one chunk)."""
    _KEYS_SEEN.add(key)
    _FIRST_CALLS[0] += seconds
