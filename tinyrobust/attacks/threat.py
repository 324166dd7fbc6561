"""The threat model a kernel enforces: the (scaled) norm ball and the data range.

`Threat` bundles the static geometry every kernel needs, so PGD, APGD and
Square share one definition of "stays in the ball and in range":

* `norm`: 'linf' or 'l2';
* `clip = (lo, hi)`: the valid input range, `lo`/`hi` scalars or arrays
  broadcastable to ONE example's shape (e.g. `[C]` per channel for
  `[B, T, C]` windows: accelerometer +-4 g, gyroscope +-500 deg/s);
* `eps_scale`: positive per-feature scales `s` (broadcastable to one
  example's shape, default 1), so one eps means a different radius per
  channel. The L-inf ball is `|delta_i| <= eps * s_i`; the L2 ball is the
  scaled norm `||delta / s||_2 <= eps`. Kernels work in the scaled space
  `u = delta / s` (random starts, steepest-ascent steps and projections are
  the unscaled ones there), so with `s = 1` nothing changes.

Clipping comes after the projection; when x lies inside the clip range the
clip only shrinks |delta_i|, so the result stays in the ball.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tinyrobust.attacks import norms


@dataclasses.dataclass(frozen=True, eq=False)
class Threat:
  """Static geometry: scaled `norm` ball of radius eps around x, then clip.

  Attributes:
    norm: 'linf' or 'l2'.
    lo, hi: float64 arrays (clip bounds, broadcastable to one example) or
      None for no clip.
    scale: positive float64 array (per-feature eps scale) or None for 1.
  """
  norm: str
  lo: np.ndarray | None = None
  hi: np.ndarray | None = None
  scale: np.ndarray | None = None

  @classmethod
  def build(cls, norm: str, clip: Any = None,
            eps_scale: Any = None) -> 'Threat':
    """Validated geometry; ValueError naming the bad option or element."""
    norms.check_norm(norm)
    lo, hi = check_clip(clip)
    return cls(norm, lo, hi, check_eps_scale(eps_scale))

  def check_example_shape(self, shape: tuple[int, ...]) -> None:
    """Clip bounds and eps scale must broadcast to one example's `shape`."""
    for name, a in (('clip lo', self.lo), ('clip hi', self.hi),
                    ('eps_scale', self.scale)):
      if a is not None and not _broadcasts_to(a.shape, tuple(shape)):
        raise ValueError(f'{name} of shape {a.shape} does not broadcast to '
                         f'one example\'s shape {tuple(shape)} (x is '
                         f'[B, *{tuple(shape)}]).')

  def _s(self, x: jax.Array) -> jax.Array:
    return jnp.asarray(self.scale, x.dtype)

  def clip(self, x: jax.Array) -> jax.Array:
    if self.lo is None:
      return x
    return jnp.clip(x, jnp.asarray(self.lo, x.dtype),
                    jnp.asarray(self.hi, x.dtype))

  def project_delta(self, d: jax.Array, eps_b: jax.Array) -> jax.Array:
    """Perturbation `d` projected onto the (scaled) ball of radius eps_b."""
    if self.scale is None:
      return norms.project(d, eps_b, self.norm)
    s = self._s(d)
    if self.norm == 'linf':
      return jnp.clip(d, -eps_b * s, eps_b * s)
    return s * norms.project(d / s, eps_b, self.norm)

  def project(self, x: jax.Array, x_new: jax.Array,
              eps_b: jax.Array) -> jax.Array:
    """`x_new` moved into the eps-ball around `x`, then into the clip range."""
    return self.clip(x + self.project_delta(x_new - x, eps_b))

  def direction(self, g: jax.Array) -> jax.Array:
    """Steepest-ascent step for gradient `g`, of unit (scaled) norm."""
    if self.scale is None:
      return norms.ascent_direction(g, self.norm)
    s = self._s(g)
    if self.norm == 'linf':
      return jnp.sign(g) * s
    return s * norms.ascent_direction(g * s, self.norm)

  def to_delta(self, u: jax.Array) -> jax.Array:
    """A perturbation stated in the scaled space, in input units."""
    return u if self.scale is None else u * self._s(u)

  def to_scaled(self, d: jax.Array) -> jax.Array:
    """A perturbation in input units, stated in the scaled space."""
    return d if self.scale is None else d / self._s(d)

  def random_init(self, key: jax.Array, x: jax.Array,
                  eps_b: jax.Array) -> jax.Array:
    """A perturbation drawn uniformly from the (scaled) ball, not clipped."""
    return self.to_delta(norms.random_init(key, x, eps_b, self.norm))

  def size(self, d: jax.Array) -> jax.Array:
    """Per-example size of perturbation `d` in the threat's (scaled) norm."""
    return norms.per_example_norm(self.to_scaled(d), self.norm)


def _broadcasts_to(a_shape: tuple[int, ...], shape: tuple[int, ...]) -> bool:
  try:
    return np.broadcast_shapes(a_shape, shape) == shape
  except ValueError:
    return False


def _real_array(name: str, value: Any) -> np.ndarray:
  """`value` as a float64 array of real numbers; ValueError otherwise."""
  if isinstance(value, (bool, np.bool_, str, bytes)):
    raise ValueError(f'{name} must be a number or an array of numbers, got '
                     f'{value!r}.')
  try:
    arr = np.asarray(value)
  except (TypeError, ValueError) as e:
    raise ValueError(f'{name} must be a number or an array of numbers, got '
                     f'{value!r}.') from e
  if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer)
                               or np.issubdtype(arr.dtype, np.floating)):
    raise ValueError(f'{name} must be a number or an array of numbers, got '
                     f'{value!r} (dtype {arr.dtype}).')
  return arr.astype(np.float64)


def _first_bad(mask: np.ndarray) -> tuple[int, ...]:
  return tuple(int(i) for i in np.argwhere(mask)[0])


def _where(shape: tuple[int, ...], idx: tuple[int, ...]) -> str:
  if not shape:
    return ''
  return f' at index {idx} (channel {idx[-1]})'


def check_clip(clip: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
  """`clip` = None or `(lo, hi)`, scalars or arrays, finite, lo < hi.

  Returns:
    `(lo, hi)` as float64 arrays broadcast to a common shape, or
    `(None, None)`.
  """
  if clip is None:
    return None, None
  if not isinstance(clip, (tuple, list)) or len(clip) != 2:
    raise ValueError(f'clip must be None or a pair (lo, hi) of scalars or '
                     f'arrays broadcastable to one example, got {clip!r}.')
  lo, hi = _real_array('clip lo', clip[0]), _real_array('clip hi', clip[1])
  try:
    lo, hi = np.broadcast_arrays(lo, hi)
  except ValueError as e:
    raise ValueError(f'clip lo of shape {lo.shape} and hi of shape '
                     f'{hi.shape} do not broadcast together.') from e
  for name, a in (('lo', lo), ('hi', hi)):
    if not np.all(np.isfinite(a)):
      idx = _first_bad(~np.isfinite(a)) if a.ndim else ()
      raise ValueError(f'clip {name} must be finite, got {float(a[idx])}'
                       f'{_where(a.shape, idx)} in clip={clip!r}.')
  if np.any(lo > hi):
    idx = _first_bad(lo > hi) if lo.ndim else ()
    raise ValueError(f'clip needs lo <= hi, got lo={float(lo[idx])} > '
                     f'hi={float(hi[idx])}{_where(lo.shape, idx)}.')
  if np.any(lo == hi):
    idx = _first_bad(lo == hi) if lo.ndim else ()
    raise ValueError(f'clip needs lo < hi, got lo = hi = {float(lo[idx])}'
                     f'{_where(lo.shape, idx)} in clip={clip!r}: an empty '
                     'range pins every input to one value.')
  return np.array(lo), np.array(hi)


def check_eps_scale(eps_scale: Any) -> np.ndarray | None:
  """None, or positive finite scales (a scalar or an array)."""
  if eps_scale is None:
    return None
  s = _real_array('eps_scale', eps_scale)
  bad = ~(np.isfinite(s) & (s > 0))
  if np.any(bad):
    idx = _first_bad(bad) if s.ndim else ()
    raise ValueError(f'eps_scale must be finite and > 0, got {float(s[idx])}'
                     f'{_where(s.shape, idx)}.')
  return s
