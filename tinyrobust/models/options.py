"""Checks for zoo model options: one helper per kind of option.

Every zoo constructor (`@register`ed in `tinyrobust/models/*.py`) validates
its keyword options with these before building the module, so a bad value
fails at `get_model(...)` with a `ValueError` that names the option, the
value and what is allowed, instead of being truncated (`int(2.5)`), read
character by character (`tuple('64')`) or silently zeroing a layer
(`dropout=1.5`). NumPy scalars (`np.int64(10)`, `np.float32(0.5)`) are
accepted; bools are not numbers here.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import numpy as np


def _is_bool(value: Any) -> bool:
  return isinstance(value, (bool, np.bool_))


def integer(name: str, value: Any, *, minimum: int | None = 1,
            maximum: int | None = None) -> int:
  """An int option (NumPy ints and integral floats accepted) in range."""
  ok = not _is_bool(value) and (
      isinstance(value, numbers.Integral) or
      (isinstance(value, numbers.Real) and math.isfinite(float(value)) and
       float(value).is_integer()))
  if not ok:
    raise ValueError(f'{name} must be an integer, got {value!r} '
                     f'({type(value).__name__}).')
  v = int(value)
  if (minimum is not None and v < minimum) or (maximum is not None and
                                               v > maximum):
    if maximum is None:
      allowed = f'>= {minimum}'
    elif minimum is None:
      allowed = f'<= {maximum}'
    else:
      allowed = f'in [{minimum}, {maximum}]'
    raise ValueError(f'{name} must be an integer {allowed}, got {value!r}.')
  return v


def optional_integer(name: str, value: Any, *, minimum: int | None = 1,
                     maximum: int | None = None) -> int | None:
  """`integer`, or None."""
  return None if value is None else integer(name, value, minimum=minimum,
                                            maximum=maximum)


def number(name: str, value: Any, *, low: float | None = None,
           high: float | None = None, low_open: bool = False,
           high_open: bool = False) -> float:
  """A finite real option (not a bool) in the given interval."""
  if _is_bool(value) or not isinstance(value, numbers.Real):
    raise ValueError(f'{name} must be a number, got {value!r} '
                     f'({type(value).__name__}).')
  v = float(value)
  bad = not math.isfinite(v)
  if low is not None:
    bad |= v <= low if low_open else v < low
  if high is not None:
    bad |= v >= high if high_open else v > high
  if bad:
    lo = '-inf' if low is None else low
    hi = 'inf' if high is None else high
    interval = (f'{"(" if low_open or low is None else "["}{lo}, {hi}'
                f'{")" if high_open or high is None else "]"}')
    raise ValueError(f'{name} must be a finite number in {interval}, got '
                     f'{value!r}.')
  return v


def rate(name: str, value: Any) -> float:
  """A dropout-style rate in [0, 1)."""
  return number(name, value, low=0.0, high=1.0, high_open=True)


def positive(name: str, value: Any) -> float:
  """A finite number > 0."""
  return number(name, value, low=0.0, low_open=True)


def boolean(name: str, value: Any) -> bool:
  """A bool option (NumPy bools accepted; 0/1 and strings are not)."""
  if not _is_bool(value):
    raise ValueError(f'{name} must be True or False, got {value!r} '
                     f'({type(value).__name__}).')
  return bool(value)


def choice(name: str, value: Any, valid: Sequence[Any]) -> Any:
  """One of `valid`."""
  if isinstance(value, (list, dict, set)) or value not in tuple(valid):
    raise ValueError(f'Unknown {name} {value!r}. Valid: '
                     f'{", ".join(map(repr, valid))}.')
  return value


def int_sequence(name: str, value: Any, *, minimum: int = 1,
                 allow_empty: bool = False,
                 length: int | None = None) -> tuple[int, ...]:
  """A list/tuple of ints (e.g. layer widths), each >= `minimum`."""
  if (isinstance(value, (str, bytes, dict)) or
      not isinstance(value, (Sequence, np.ndarray))):
    raise ValueError(f'{name} must be a list of integers, got {value!r} '
                     f'({type(value).__name__}).')
  out = tuple(integer(f'{name}[{i}]', v, minimum=minimum)
              for i, v in enumerate(value))
  if not out and not allow_empty:
    raise ValueError(f'{name} must be a non-empty list of integers, got '
                     f'{value!r}.')
  if length is not None and len(out) != length:
    raise ValueError(f'{name} must hold {length} integers, got {value!r}.')
  return out


def shape(name: str, value: Any, rank: int | Sequence[int]
          ) -> tuple[int, ...] | None:
  """An optional per-example shape (no batch axis) of the given rank(s)."""
  if value is None:
    return None
  ranks = (rank,) if isinstance(rank, int) else tuple(rank)
  allowed = ' or '.join(map(str, ranks))
  if (isinstance(value, (str, bytes, dict)) or
      not isinstance(value, (Sequence, np.ndarray))):
    raise ValueError(f'{name} must be a sequence of {allowed} positive ints '
                     f'(one example, no batch axis), got {value!r}.')
  dims = tuple(integer(f'{name}[{i}]', v, minimum=1)
               for i, v in enumerate(value))
  if len(dims) not in ranks:
    raise ValueError(f'{name} must be {allowed} positive ints (no batch '
                     f'axis), got {value!r}.')
  return dims
