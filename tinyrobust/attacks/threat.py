"""The threat model a kernel enforces: the norm ball around x and the data range.

`Threat` bundles the static geometry every kernel needs (norm, clip range)
so PGD, APGD and Square share one definition of "stays in the ball and in
range": steps, projections and random starts.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tinyrobust.attacks import norms


@dataclasses.dataclass(frozen=True, eq=False)
class Threat:
  """Static geometry: `norm` ball of radius eps around x, then `clip`.

  Attributes:
    norm: 'linf' or 'l2'.
    lo, hi: clip bounds (floats) or None for no clip.
  """
  norm: str
  lo: Any = None
  hi: Any = None

  @classmethod
  def build(cls, norm: str, clip: Any = None) -> 'Threat':
    norms.check_norm(norm)
    check_clip(clip)
    if clip is None:
      return cls(norm)
    return cls(norm, float(clip[0]), float(clip[1]))

  def clip(self, x: jax.Array) -> jax.Array:
    if self.lo is None:
      return x
    return jnp.clip(x, self.lo, self.hi)

  def project(self, x: jax.Array, x_new: jax.Array,
              eps_b: jax.Array) -> jax.Array:
    """`x_new` moved into the eps-ball around `x`, then into the clip range."""
    return self.clip(x + norms.project(x_new - x, eps_b, self.norm))

  def direction(self, g: jax.Array) -> jax.Array:
    """Unit steepest-ascent step (in input units) for gradient `g`."""
    return norms.ascent_direction(g, self.norm)

  def random_init(self, key: jax.Array, x: jax.Array,
                  eps_b: jax.Array) -> jax.Array:
    """A perturbation drawn uniformly from the eps-ball (not clipped)."""
    return norms.random_init(key, x, eps_b, self.norm)

  def size(self, d: jax.Array) -> jax.Array:
    """Per-example size of perturbation `d` in the threat's norm, `[B]`."""
    return norms.per_example_norm(d, self.norm)


def check_clip(clip: Any) -> None:
  """`clip` is None or `(lo, hi)`, finite numbers with lo < hi."""
  if clip is None:
    return
  ok = (isinstance(clip, (tuple, list)) and len(clip) == 2
        and all(_is_real(c) and math.isfinite(c) for c in clip)
        and clip[0] < clip[1])
  if not ok:
    raise ValueError(f'clip must be None or (lo, hi) finite with lo < hi, '
                     f'got {clip!r}.')


def _is_real(v: Any) -> bool:
  return isinstance(v, (int, float, np.integer, np.floating)) and not \
      isinstance(v, bool)
