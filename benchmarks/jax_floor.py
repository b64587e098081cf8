"""The floor `benchmarks/trainer.py` compares with: the post's network, loss and SGD as one JAX
program, every epoch inside one jit-compiled `lax.fori_loop` (no per-epoch dispatch, no history).

Needs the `[bench]` extra (`pip install -e '.[bench]'`, CPU JAX); without it `floor_us` is None.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import numpy as np


def floor_us(
    data, start: Sequence[np.ndarray], objective: str, epochs: int, anchor_weight: float,
    repeats: int,
) -> tuple[float, float] | None:  # fmt: skip
    """Microseconds per epoch of full-batch SGD (lr 0.1) on `objective` from `start` (best of
    `repeats` after a compiling call) and the final loss (to hold against ours); None where
    JAX is not installed."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None

    def f(params, x):
        h = x
        for kernel, bias in zip(params[:-2:2], params[1:-2:2], strict=True):
            h = jax.nn.sigmoid(h @ kernel + bias)
        return h @ params[-2] + params[-1]

    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    xc, dyc = jnp.asarray(data.x_colloc), jnp.asarray(data.dy_colloc)
    x0 = jnp.full((1, 1), data.anchor_x, jnp.float32)

    def value_loss(params):
        return jnp.mean((f(params, x) - y) ** 2)

    def derivative_loss(params):
        # f' at every collocation point in one forward-mode pass (each row is its own x).
        _, slope = jax.jvp(lambda xs: f(params, xs), (xc,), (jnp.ones_like(xc),))
        anchor = f(params, x0)[0, 0] - data.anchor_y
        return jnp.mean((slope - dyc) ** 2) + anchor_weight * anchor**2

    loss = value_loss if objective == "value" else derivative_loss
    grad = jax.grad(loss)

    @jax.jit
    def run(params):
        def epoch(_, p):
            return [w - 0.1 * g for w, g in zip(p, grad(p), strict=True)]

        return jax.lax.fori_loop(0, epochs, epoch, params)

    params = [jnp.asarray(w) for w in start]
    final = float(loss(jax.block_until_ready(run(params))))  # the first call compiles
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(run(params))
        best = min(best, time.perf_counter() - started)
    return best / epochs * 1e6, final
