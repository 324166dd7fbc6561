"""Iterative hard thresholding (IHT), as EdgeML trains its sparse models.

EdgeML (ProtoNN, Bonsai, FastRNN/FastGRNN) states sparsity as a *density*
`s` in (0, 1]: the fraction of a matrix's entries kept non-zero (`s = 1` is
dense). `hard_threshold` is a jit-safe transcription of EdgeML's
`utils.hardThreshold`: entries with `|w|` below the `(1 - s)` percentile
(numpy 'higher' interpolation) are zeroed.

EdgeML's schedule for Bonsai and FastGRNN is three equal phases: dense
training, IHT (threshold after every update), then sparse retraining on a
fixed support. `iht_project` runs inside the jitted train step, so it has no
state to remember the support with; in the last phase it keeps re-applying
the top-k threshold, which keeps the same number of non-zeros and in practice
the same support.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp


def check_density(name: str, density: float) -> float:
  """Validates a density in (0, 1]; returns it as a float."""
  d = float(density)
  if not 0.0 < d <= 1.0:
    raise ValueError(f'{name} must be a density in (0, 1] (fraction of '
                     f'non-zeros kept; 1 = dense), got {density!r}.')
  return d


def hard_threshold(w: jax.Array, density: float) -> jax.Array:
  """Zeroes all but the largest-magnitude `density` fraction of `w`.

  Args:
    w: any-shape array.
    density: static float in (0, 1]; 1 returns `w` unchanged.

  Returns:
    Array like `w` where entries with `|w| < th` are 0, `th` being the
    `(1 - density)` percentile of `|w|` with numpy's 'higher' interpolation
    (exactly EdgeML's rule; ties at the threshold are kept).
  """
  density = check_density('density', density)
  if density >= 1.0 or w.size == 0:
    return w
  mags = jnp.sort(jnp.abs(w).reshape(-1))
  # numpy percentile(q, 'higher') picks sorted index ceil(q * (n - 1)).
  idx = min(w.size - 1, math.ceil((1.0 - density) * (w.size - 1) - 1e-9))
  th = mags[idx]
  return jnp.where(jnp.abs(w) < th, jnp.zeros_like(w), w)


def iht_project(params: Mapping[str, Any], densities: Mapping[str, float],
                progress: jax.Array, *, start: float) -> dict[str, Any]:
  """Hard-thresholds the named top-level params once `progress >= start`.

  Args:
    params: a flat-ish params dict; keys of `densities` name its leaves (a
      key may be 'sub/leaf' to reach one level down).
    densities: leaf name -> density; entries with density 1 are skipped.
    progress: traced scalar in [0, 1] (training step / total steps).
    start: static float; thresholding is off before it (dense phase).

  Returns:
    A new params dict (the input is not modified).
  """
  out = jax.tree_util.tree_map(lambda a: a, dict(params))
  active = jnp.asarray(progress) >= start
  for path, density in densities.items():
    if density >= 1.0:
      continue
    keys = path.split('/')
    node = out
    for k in keys[:-1]:
      node[k] = dict(node[k])
      node = node[k]
    w = node[keys[-1]]
    node[keys[-1]] = jnp.where(active, hard_threshold(w, density), w)
  return out
