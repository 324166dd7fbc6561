"""Batch iteration without materialising a whole split.

`stream(name, split, batch_size, **options)` takes the same options as
`tinyrobust.data.load`. Sources that can read lazily (the TFDS paths of
`cifar10` and `speech_commands`) register a streamer with `register_stream`;
it yields NumPy batches from a `tf.data` pipeline. Every other case falls back
to `load(...)` and slices the arrays, so `stream` works for every dataset and
yields the same examples in the same order as `load(...).batches(...)` when
not shuffled.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from tinyrobust import registry
from tinyrobust.data import base

Batch = tuple[np.ndarray, np.ndarray]
# fn(split, batch_size, shuffle_seed, drop_remainder, **options) -> iterator,
# or None when these options are served by load() instead (e.g. local files).
STREAMERS = registry.Registry('stream')


def register_stream(name: str):
  """Decorator registering a lazy batch iterator for dataset `name`."""
  return STREAMERS.register(name)


def stream(name: str, split: str, batch_size: int, *,
           shuffle_seed: int | None = None, drop_remainder: bool = False,
           **options) -> Iterator[Batch]:
  """Yields `(x, y)` NumPy batches of one split.

  Args:
    name: dataset name, one of `tinyrobust.data.list_datasets()`.
    split: split name.
    batch_size: examples per batch (the last one may be smaller unless
      `drop_remainder`).
    shuffle_seed: None keeps the stored order; an int shuffles
      deterministically (TFDS streams shuffle within a 10,000-example buffer).
    drop_remainder: drop the last partial batch.
    **options: the source's options, as for `load`.

  Raises:
    ValueError: unknown name, split or option, or batch_size < 1.
  """
  base.get_source(name, split, options)
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
  it = None
  if name in STREAMERS:
    it = STREAMERS.lookup(name)(split=split, batch_size=batch_size,
                          shuffle_seed=shuffle_seed,
                          drop_remainder=drop_remainder, **options)
  if it is None:
    it = base.load(name, split, **options).batches(
        batch_size, shuffle_seed=shuffle_seed, drop_remainder=drop_remainder)
  return it


def tf_batches(ds, batch_size: int, shuffle_seed: int | None,
               drop_remainder: bool) -> Iterator[Batch]:
  """Shuffles/batches a `tf.data.Dataset` of `(x, y)` and yields NumPy."""
  if shuffle_seed is not None:
    ds = ds.shuffle(10_000, seed=shuffle_seed, reshuffle_each_iteration=False)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(2)
  for x, y in ds.as_numpy_iterator():
    yield np.asarray(x, np.float32), np.asarray(y, np.int32)


def tf_to_numpy(ds, chunk: int = 4096) -> Batch:
  """Materialises a `tf.data.Dataset` of fixed-shape `(x, y)` as two arrays."""
  xs, ys = [], []
  for x, y in ds.batch(chunk).as_numpy_iterator():
    xs.append(x)
    ys.append(y)
  if not xs:
    raise ValueError('The TFDS split is empty.')
  return np.concatenate(xs), np.concatenate(ys)
