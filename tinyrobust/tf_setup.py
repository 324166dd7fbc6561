"""Imports TensorFlow for data and export work while keeping it off accelerators.

JAX owns the GPU/TPU; TensorFlow is only used for tf.data / TFDS pipelines and
the TFLite converter, so it must not grab accelerator memory.
"""

from __future__ import annotations

import functools
import os


@functools.lru_cache(maxsize=None)
def import_tf():
  """Returns the `tensorflow` module with GPUs/TPUs hidden from it."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], 'GPU')
    tf.config.set_visible_devices([], 'TPU')
  except (RuntimeError, ValueError):
    pass  # already initialised, or no such device type
  return tf
