"""The per-example input shape every hardware entry point takes, checked once.

`count`, `profile` and `export_tflite` take one example's shape *without* the
batch axis (the MCU runs batch 1). A shape that includes it, e.g. `(1, 5)`
for a model built for `(5,)`, still traces for models that flatten their
input, and the profile would then record the wrong shape. `example_shape`
rejects it whenever the model declares its per-example shape
(`conventions.InputSpec.example_input_shape()`) and warns when a model that
declares nothing gets a leading axis of 1.
"""

from __future__ import annotations

from typing import Any

from absl import logging
import numpy as np


def _is_int(d: Any) -> bool:
  return isinstance(d, (int, np.integer)) and not isinstance(d, (bool,
                                                                 np.bool_))


def declared_shape(model: Any) -> tuple[int, ...] | None:
  """The per-example shape `model` declares, or None.

  `example_input_shape()` for zoo modules (`conventions.InputSpec`), else a
  non-None `input_shape` attribute (the `mlp` / `cnn` option).
  """
  fn = getattr(model, 'example_input_shape', None)
  try:
    shape = (fn() if callable(fn) else getattr(model, 'input_shape', None))
    shape = tuple(int(d) for d in shape) if shape is not None else ()
  except (TypeError, ValueError):
    return None
  return shape or None


def example_shape(input_shape: Any, model: Any = None) -> tuple[int, ...]:
  """Validates one example's shape (no batch axis) for `model`.

  Args:
    input_shape: a sequence of positive ints, e.g. `(32, 32, 3)`.
    model: optional module; when it declares its per-example shape, a shape
      equal to `(1, *declared)` is rejected as including the batch axis.

  Returns:
    The shape as a tuple of Python ints.

  Raises:
    ValueError: not a non-empty sequence of positive ints, or the batch axis
      is included (the message names both shapes).
  """
  if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape,
                                                           '__len__'):
    raise ValueError(f'input_shape must be a sequence of positive ints (one '
                     f'example, no batch axis), e.g. (32, 32, 3); got '
                     f'{input_shape!r}.')
  shape = tuple(input_shape)
  if not shape or not all(_is_int(d) and d > 0 for d in shape):
    raise ValueError(f'input_shape must be a non-empty tuple of positive ints '
                     f'(one example, no batch axis), got {input_shape!r}.')
  shape = tuple(int(d) for d in shape)
  declared = declared_shape(model) if model is not None else None
  if declared is not None and shape == (1,) + declared:
    raise ValueError(
        f'input_shape {shape} includes the batch axis: '
        f'{type(model).__name__} declares the per-example shape {declared}; '
        f'pass input_shape={declared} (the MCU runs batch 1).')
  if declared is None and len(shape) >= 2 and shape[0] == 1:
    logging.warning('input_shape %s starts with 1: if that is the batch '
                    'axis, pass %s (one example, no batch axis).', shape,
                    shape[1:])
  return shape
