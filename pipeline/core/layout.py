"""Networks of any depth, width and activation packed into one set of padded, stacked arrays.

A compiled graph is built for a `Layout` (the deepest and widest network it serves and the
activations it can switch between) and trains a population of K networks at once: slot k's
network is zero-padded into the stacks, masks keep the padding out of the computation, an
`active` flag per hidden layer passes inactive layers through, and an index picks the slot's
activation. So depth, width and activation are data, and one graph serves a whole sweep.
NumPy only: workers pack and unpack without touching TensorFlow's graphs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# The stacked arrays, in the order the graph takes them (K slots first in every shape):
# kernel_in (K, 1, W), bias_in (K, W), kernel_hidden (K, D-1, W, W), bias_hidden (K, D-1, W),
# kernel_out (K, W, 1), bias_out (K, 1), where D is the layout's depth and W its width.
N_STACKS = 6


@dataclass(frozen=True)
class Layout:
    """The static shape of a compiled graph: the deepest and widest network, the activations
    and the update rules (SGD, Adam) its slots may use; a graph computes only those."""

    depth: int
    width: int
    activations: tuple[str, ...]
    optimizers: tuple[str, ...]

    @classmethod
    def exact(cls, hidden: Sequence[int], activation: str, optimizer: str) -> Layout:
        """The smallest layout holding this one network (what a single run compiles)."""
        return cls(len(hidden), max(hidden), (activation,), (optimizer,))

    def holds(self, hidden: Sequence[int], activation: str, optimizer: str) -> bool:
        """Whether a network with these hidden widths, activation and rule fits this layout."""
        return self._fits(hidden, activation) and optimizer in self.optimizers

    def _fits(self, hidden: Sequence[int], activation: str) -> bool:
        return (
            1 <= len(hidden) <= self.depth
            and max(hidden) <= self.width
            and activation in self.activations
        )

    def shapes(self, k: int) -> list[tuple[int, ...]]:
        """Shapes of the stacked weight arrays for `k` slots."""
        d, w = self.depth, self.width
        return [(k, 1, w), (k, w), (k, d - 1, w, w), (k, d - 1, w), (k, w, 1), (k, 1)]


@dataclass(frozen=True)
class Packed:
    """One network as a slot: padded weights, their masks (kernels only), layer flags, act."""

    weights: list[np.ndarray]  # N_STACKS arrays, each without the slot axis
    masks: list[np.ndarray]  # kernel_in, kernel_hidden, kernel_out masks
    active: np.ndarray  # (D-1,) 1.0 where hidden layer 2.. exists
    activation: int  # index into Layout.activations


def pack(layout: Layout, weights: Sequence[np.ndarray], activation: str) -> Packed:
    """Pad [kernel0, bias0, ..., kernel_out, bias_out] of one network into a slot of `layout`."""
    hidden = [np.shape(b)[0] for b in weights[1:-2:2]]
    if not layout._fits(hidden, activation):
        raise ValueError(f"network {hidden} {activation} does not fit {layout}")
    shapes, dtype = layout.shapes(1), np.result_type(*weights)
    padded = [np.zeros(s[1:], dtype) for s in shapes]
    masks = [np.zeros(shapes[i][1:], dtype) for i in (0, 2, 4)]
    first, h0 = weights[0], hidden[0]
    padded[0][:, :h0], padded[1][:h0], masks[0][:, :h0] = first, weights[1], 1.0
    for layer in range(1, len(hidden)):
        kernel, bias = weights[2 * layer], weights[2 * layer + 1]
        rows, cols = kernel.shape
        padded[2][layer - 1, :rows, :cols] = kernel
        padded[3][layer - 1, :cols] = bias
        masks[1][layer - 1, :rows, :cols] = 1.0
    padded[4][: hidden[-1], :], padded[5][:] = weights[-2], weights[-1]
    masks[2][: hidden[-1], :] = 1.0
    active = np.zeros(layout.depth - 1, dtype)
    active[: len(hidden) - 1] = 1.0
    return Packed(padded, masks, active, layout.activations.index(activation))


def unpack(padded: Sequence[np.ndarray], hidden: Sequence[int]) -> list[np.ndarray]:
    """The network's own weights back out of one slot's padded arrays (no slot axis)."""
    h0 = hidden[0]
    weights = [padded[0][:, :h0].copy(), padded[1][:h0].copy()]
    for layer in range(1, len(hidden)):
        rows, cols = hidden[layer - 1], hidden[layer]
        weights += [
            padded[2][layer - 1, :rows, :cols].copy(),
            padded[3][layer - 1, :cols].copy(),
        ]
    return [*weights, padded[4][: hidden[-1], :].copy(), padded[5].copy()]
