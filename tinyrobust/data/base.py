"""The `Dataset` record, the source registry and helpers shared by all loaders.

A *source* is a function `fn(split, **options) -> Dataset` registered under a
name with `register_source`. `tinyrobust.data.load(name, split, **options)`
looks the name up, checks the split and the option names against what the
source declares, and calls it. New datasets slot in by registering a source.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from tinyrobust import registry

DATA_DIR_ENV = 'TINYROBUST_DATA_DIR'


@dataclasses.dataclass
class Dataset:
  """One split of a dataset, materialised as NumPy arrays.

  Attributes:
    x: float32 inputs; layout documented per source (e.g. `[N, H, W, C]` for
      images, `[N, T, C]` for IMU windows, `[N, samples]` for audio).
    y: int32 labels in `[0, num_classes)`, shape `[N]`.
    label_names: class names, index = label.
    input_range: `(lo, hi)` bounds of valid inputs in input units, or None when
      the input has no physical range (e.g. standardised features).
    meta: protocol, normalisation, source and split membership information.
  """
  x: np.ndarray
  y: np.ndarray
  label_names: tuple[str, ...]
  input_range: tuple[float, float] | None
  meta: dict[str, Any]
  name: str = ''
  split: str = ''

  def __post_init__(self):
    self.x = np.asarray(self.x, np.float32)
    self.y = np.asarray(self.y, np.int32)
    if self.x.shape[0] != self.y.shape[0]:
      raise ValueError(
          f'x has {self.x.shape[0]} examples but y has {self.y.shape[0]}.')
    self.label_names = tuple(str(n) for n in self.label_names)

  def __len__(self) -> int:
    return int(self.x.shape[0])

  @property
  def num_classes(self) -> int:
    return len(self.label_names)

  @property
  def input_shape(self) -> tuple[int, ...]:
    """Shape of one example (no batch axis)."""
    return tuple(self.x.shape[1:])

  def class_counts(self) -> dict[str, int]:
    counts = np.bincount(self.y, minlength=self.num_classes)
    return {n: int(c) for n, c in zip(self.label_names, counts)}

  def batches(self, batch_size: int, *, shuffle_seed: int | None = None,
              drop_remainder: bool = False) -> Iterator[tuple[np.ndarray,
                                                              np.ndarray]]:
    """Yields `(x, y)` batches; shuffled deterministically when a seed is given."""
    if batch_size < 1:
      raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
    idx = np.arange(len(self))
    if shuffle_seed is not None:
      idx = np.random.default_rng(shuffle_seed).permutation(len(self))
    stop = len(self) - (len(self) % batch_size if drop_remainder else 0)
    for i in range(0, stop, batch_size):
      j = idx[i:i + batch_size]
      yield self.x[j], self.y[j]


@dataclasses.dataclass(frozen=True)
class Source:
  name: str
  fn: Callable[..., Dataset]
  splits: tuple[str, ...]
  options: tuple[str, ...]
  description: str


SOURCES = registry.Registry('dataset', positional=('split',))


def register_source(name: str, *, splits: Sequence[str] = ('train', 'val',
                                                             'test'),
                    description: str = ''):
  """Decorator registering `fn(split, **options) -> Dataset` as `name`."""

  def wrap(fn):
    params = inspect.signature(fn).parameters
    options = tuple(p for p in params if p != 'split')
    SOURCES.register(name, obj=Source(
        name, fn, tuple(splits), options,
        description or (fn.__doc__ or '').split('\n')[0]))
    return fn

  return wrap


def list_datasets() -> list[str]:
  """Names accepted by `load`."""
  return SOURCES.names()


def check_dataset(name: str) -> None:
  """Raises ValueError naming the valid datasets when `name` is unknown."""
  SOURCES.lookup(name)


def get_source(name: str, split: str | None = None,
               options: Sequence[str] = ()) -> Source:
  """The registered source `name`; checks `split` and option names."""
  src = SOURCES.lookup(name)
  if split is not None and split not in src.splits:
    raise ValueError(f'Unknown split {split!r} for dataset {name!r}. '
                     f'Valid splits: {", ".join(src.splits)}.')
  registry.check_options('dataset', name, src.fn, options,
                         positional=('split',))
  return src


def load(name: str, split: str, **options) -> Dataset:
  """Loads one split of a registered dataset.

  Args:
    name: dataset name, one of `list_datasets()`.
    split: one of the source's splits (usually 'train', 'val', 'test').
    **options: source-specific options (seed, paths, windowing, ...).

  Returns:
    A `Dataset` record.

  Raises:
    ValueError: unknown name, split or option (the message lists valid ones).
  """
  src = get_source(name, split, options)
  ds = src.fn(split=split, **options)
  ds.name, ds.split = name, split
  return ds


def stratified_split(y: np.ndarray, fractions: Sequence[float],
                     seed: int) -> list[np.ndarray]:
  """Splits indices into len(fractions) parts, stratified by label.

  Deterministic for a given `seed`; each part's indices are sorted.
  """
  if abs(sum(fractions) - 1.0) > 1e-9 or any(f < 0 for f in fractions):
    raise ValueError(f'fractions must be >= 0 and sum to 1, got {fractions}.')
  rng = np.random.default_rng(seed)
  parts = [[] for _ in fractions]
  bounds = np.cumsum(fractions)
  for c in np.unique(y):
    idx = rng.permutation(np.flatnonzero(y == c))
    cuts = np.round(bounds * len(idx)).astype(int)
    start = 0
    for k, stop in enumerate(cuts):
      parts[k].extend(idx[start:stop])
      start = stop
  return [np.sort(np.asarray(p, np.int64)) for p in parts]


def check_seed(seed) -> int:
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f'seed must be a non-negative int, got {seed!r}.')
  return int(seed)


# Old spellings still accepted (normalisation='standardize').
_ALIASES = {'standardize': 'standardise'}


def check_choice(name: str, value: Any, valid: Sequence[str]) -> str:
  """`value` if it is one of `valid` (after old spellings are mapped)."""
  value = _ALIASES.get(value, value) if isinstance(value, str) else value
  if value not in valid:
    raise ValueError(f'Unknown {name} {value!r}. Valid: {", ".join(valid)}.')
  return value


def check_fraction(name: str, value: float) -> float:
  if not 0.0 < float(value) < 1.0:
    raise ValueError(f'{name} must be in (0, 1), got {value!r}.')
  return float(value)


def check_split_fractions(seed, val_fraction: float,
                          test_fraction: float) -> tuple[int, float, float]:
  """Checked `(seed, val_fraction, test_fraction)` of a three-way split."""
  seed = check_seed(seed)
  val_fraction = check_fraction('val_fraction', val_fraction)
  test_fraction = check_fraction('test_fraction', test_fraction)
  if val_fraction + test_fraction >= 1:
    raise ValueError('val_fraction + test_fraction must be < 1, got '
                     f'{val_fraction} + {test_fraction}.')
  return seed, val_fraction, test_fraction


def find_local_file(filename: str, data_dir: str | None) -> str | None:
  """Returns the path of `filename` in `data_dir` if given (a folder the
  user named is never silently replaced), else in $TINYROBUST_DATA_DIR."""
  for d in ((data_dir,) if data_dir else (os.environ.get(DATA_DIR_ENV),)):
    if d:
      path = os.path.join(os.path.expanduser(d), filename)
      if os.path.exists(path):
        return path
  return None
