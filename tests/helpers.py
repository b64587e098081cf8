"""Small conversions the network tests share."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf


def tensors(arrays: Sequence[np.ndarray], dtype: tf.DType = tf.float32) -> list[tf.Tensor]:
    return [tf.constant(a, dtype) for a in arrays]
