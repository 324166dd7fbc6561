"""The study's 10 hand-made HAR window features as a differentiable JAX function.

ProtoNN and Bonsai in the study (EdgeML) see 10 numbers per window, computed
from the accelerometer magnitude |a| (g) and gyroscope magnitude |w| (deg/s):

    [min|a|, min|w|, max|a|, max|w|, range|a|, range|w|, var|a|, var|w|,
     std|a|, std|w|]

in exactly that order (the study's feature-extraction loop; `var` is the
population variance, `np.var`). Because the function is written in `jnp`, a
feature model can be wrapped as `model(window_features(x))` and attacked in
raw-signal space. Gradients are finite everywhere: square roots use a
zero-gradient-at-zero form, and min/max pass the gradient to the arg-extremum
(a subgradient).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

FEATURE_NAMES = ('acc_mag_min', 'gyro_mag_min', 'acc_mag_max', 'gyro_mag_max',
                 'acc_mag_range', 'gyro_mag_range', 'acc_mag_var',
                 'gyro_mag_var', 'acc_mag_std', 'gyro_mag_std')
NUM_FEATURES = len(FEATURE_NAMES)


def _safe_sqrt(v):
  pos = v > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, v, 1.0)), 0.0)


def magnitudes(x: jax.Array) -> jax.Array:
  """`[..., T, 6]` (acc xyz g, gyro xyz deg/s) -> `[..., T, 2]` (|a|, |w|)."""
  if x.shape[-1] != 6:
    raise ValueError(f'Expected 6 channels (acc xyz, gyro xyz), got shape '
                     f'{x.shape}.')
  acc = _safe_sqrt(jnp.sum(x[..., :3]**2, axis=-1))
  gyro = _safe_sqrt(jnp.sum(x[..., 3:]**2, axis=-1))
  return jnp.stack([acc, gyro], axis=-1)


def window_features(x: jax.Array) -> jax.Array:
  """The 10 study features of each window.

  Args:
    x: `[..., T, 6]` raw windows (acc xyz in g, gyro xyz in deg/s) or
      `[..., T, 2]` magnitude windows (|a| in g, |w| in deg/s).

  Returns:
    `[..., 10]` float32 features in the order of `FEATURE_NAMES`
    (units: g or deg/s; variances in squared units).
  """
  x = jnp.asarray(x, jnp.float32)
  if x.shape[-1] == 6:
    m = magnitudes(x)
  elif x.shape[-1] == 2:
    m = x
  else:
    raise ValueError(f'Expected 6 raw or 2 magnitude channels, got shape '
                     f'{x.shape}.')
  lo = jnp.min(m, axis=-2)
  hi = jnp.max(m, axis=-2)
  var = jnp.mean((m - jnp.mean(m, axis=-2, keepdims=True))**2, axis=-2)
  # Each pair is (acc, gyro), giving the study's interleaved order.
  return jnp.concatenate([lo, hi, hi - lo, var, _safe_sqrt(var)], axis=-1)
