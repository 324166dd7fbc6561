"""Validation of an evaluation's inputs, before any compilation.

`check_eval_inputs` checks the options (eps grid, ints), the data (shapes,
finite values, labels against both the dataset's and the model's class
count) and takes the seeded subset; `subset_indices` is the one definition
of that subset (the evaluator and the search share it).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax
import jax
import numpy as np

from tinyrobust import attacks as attacks_lib
from tinyrobust.attacks import checks as attack_checks
from tinyrobust.attacks import threat as threat_lib


def subset_indices(n: int, max_examples: int | None,
                   seed: int) -> np.ndarray | None:
  """Sorted indices of a seeded random subset of size `max_examples`.

  None when the whole split is used. A random (not leading) subset, because
  splits are ordered by recording and the first N windows would cover a few
  participants only. The evaluator and the search use this one function.
  """
  if max_examples is None or max_examples >= n:
    return None
  return np.sort(np.random.default_rng(seed).permutation(n)[:max_examples])


def check_eps_grid(eps_grid) -> np.ndarray:
  """A non-empty 1-D float64 array of finite radii >= 0 (input units)."""
  try:
    grid = np.asarray(eps_grid, np.float64) if eps_grid is not None else None
  except (TypeError, ValueError):
    grid = None
  if grid is None or grid.ndim != 1 or grid.size == 0 or not np.all(
      np.isfinite(grid)) or np.any(grid < 0):
    raise ValueError(f'eps_grid must be a non-empty 1-D list of finite '
                     f'numbers >= 0 (input units), got {eps_grid!r}.')
  return grid


def check_int(name: str, value, minimum: int) -> int:
  """`value` as an int >= `minimum` (bools are not ints here)."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
      or value < minimum:
    raise ValueError(f'{name} must be an int >= {minimum}, got {value!r}.')
  return int(value)


def unpack_dataset(dataset):
  """(x, y, num_classes or None, input_range or None) from a Dataset/pair."""
  if hasattr(dataset, 'x') and hasattr(dataset, 'y'):
    return (np.asarray(dataset.x), np.asarray(dataset.y),
            getattr(dataset, 'num_classes', None),
            getattr(dataset, 'input_range', None))
  if isinstance(dataset, (tuple, list)) and len(dataset) == 2:
    return np.asarray(dataset[0]), np.asarray(dataset[1]), None, None
  raise ValueError('dataset must be a tinyrobust.data.Dataset or an (x, y) '
                   f'pair, got {type(dataset).__name__}.')


def model_num_classes(apply_fn: Callable, variables: Any,
                      example_shape: Sequence[int], dtype=np.float32) -> int:
  """Classes the model outputs, from an abstract call; checks `[B, K]`.

  Raises:
    ValueError: the model's parameters do not match `variables` (a
      checkpoint of another architecture: Flax's scope error, quoted), or
      the output is not `[B, K]`.
  """
  try:
    out = jax.eval_shape(apply_fn, variables,
                         jax.ShapeDtypeStruct((2,) + tuple(example_shape),
                                              dtype))
  except flax.errors.FlaxError as err:
    raise ValueError(
        f'The variables do not fit the model ({type(err).__name__}: '
        f'{str(err).splitlines()[0]}): they were made for another '
        'architecture or options (check the checkpoint against the config '
        'that builds the model).') from err
  shape = getattr(out, 'shape', None)
  if shape is None or len(shape) != 2 or shape[0] != 2:
    raise ValueError(f'apply_fn must return logits of shape [B, K]; for a '
                     f'batch of 2 it returned {shape}.')
  return int(shape[1])


def check_eval_inputs(apply_fn, variables, dataset, *, eps_grid, batch_size,
                      seed, max_examples=None, clip='dataset'):
  """Validates an evaluation before any compilation; returns its pieces.

  Returns:
    `(x, y, num_classes, grid, clip)` with `x` float32 (float64 is cast),
    the subset already taken.

  Raises:
    ValueError: naming the bad value (eps grid, ints, empty or non-finite
      data, labels out of range, model/dataset class counts that disagree,
      a clip range with lo >= hi or that does not contain the data).
  """
  x, y, ds_classes, input_range = unpack_dataset(dataset)
  grid = check_eps_grid(eps_grid)
  check_int('batch_size', batch_size, 1)
  check_int('seed', seed, 0)
  if max_examples is not None:
    check_int('max_examples', max_examples, 1)
  if isinstance(clip, str) and clip == 'dataset':
    clip = tuple(input_range) if input_range is not None else None
  if len(x) == 0:
    raise ValueError('dataset is empty.')
  attacks_lib.check_shapes(x, y, 0.0)
  x = x.astype(np.float32) if x.dtype == np.float64 else x
  num_classes = model_num_classes(apply_fn, variables, x.shape[1:], x.dtype)
  if ds_classes is not None and int(ds_classes) != num_classes:
    raise ValueError(f'The model outputs {num_classes} classes but the '
                     f'dataset has {ds_classes}.')
  attacks_lib.check_inputs(x, y, 0.0, num_classes=num_classes)
  keep = subset_indices(len(x), max_examples, int(seed))
  if keep is not None:
    x, y = x[keep], y[keep]
  check_clip_contains(x, clip)
  return x, y, num_classes, grid, clip


def check_clip_contains(x: np.ndarray, clip) -> None:
  """`clip` (None or `(lo, hi)`, scalars or per-channel) must have lo < hi
  and contain the clean inputs `x [B, ...]` (`attacks.checks.check_in_clip`:
  ValueError naming the range, the data's per-channel min/max and the count
  of values outside)."""
  if clip is None:
    return
  threat = threat_lib.Threat.build('linf', clip)
  threat.check_example_shape(tuple(x.shape[1:]))
  attack_checks.check_in_clip(x, threat.lo, threat.hi)


def check_x_train(x_train, frontend: Callable | None,
                  x: np.ndarray) -> np.ndarray:
  """The calibration inputs of an int8 export, checked before any export.

  Args:
    x_train: `[N, *M]` training MODEL inputs (after `frontend`).
    frontend: signal -> model input, or None (x is the model input).
    x: `[B, *S]` the evaluated (attacked-space) inputs; `M` is the shape
      `frontend` maps `S` to.

  Returns:
    `x_train` as a numeric array.

  Raises:
    ValueError: `x_train` is not a numeric array, is empty, holds
      non-finite values, or its example shape is not `M`; naming `x_train`,
      its shape and the expected one.
  """
  try:
    xt = np.asarray(x_train)
  except (TypeError, ValueError):
    xt = np.asarray(None)
  if xt.dtype.kind not in 'fiu':
    raise ValueError(f'x_train must be a numeric array of training model '
                     f'inputs, got {type(x_train).__name__} of dtype '
                     f'{xt.dtype}.')
  spec = jax.ShapeDtypeStruct((1,) + tuple(x.shape[1:]), np.float32)
  want = tuple(x.shape[1:]) if frontend is None else tuple(
      jax.eval_shape(frontend, spec).shape[1:])
  where = (' (model inputs: the frontend maps the evaluated '
           f'{list(x.shape[1:])} to {list(want)})' if frontend else
           ' (the evaluated inputs\' example shape)')
  if xt.ndim != len(want) + 1 or tuple(xt.shape[1:]) != want:
    raise ValueError(f'x_train has shape {list(xt.shape)}; it must be '
                     f'[N, {", ".join(map(str, want))}]{where}. It '
                     'calibrates the int8 export: give the training split\'s '
                     'model inputs.')
  if not len(xt):
    raise ValueError('x_train is empty: the int8 export needs training '
                     'inputs to calibrate on.')
  bad = int(np.count_nonzero(~np.isfinite(xt)))
  if bad:
    raise ValueError(f'x_train contains {bad} NaN/inf value(s); calibration '
                     'inputs must be finite.')
  return xt
