"""Threat-model geometry for L-inf and L2 balls: steps, projections, sampling.

All functions take a batch `[B, ...]` and a per-example radius `eps_b` already
broadcast to `[B, 1, ..., 1]` (see `broadcast_eps`). Radii are in input units.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NORMS = ('linf', 'l2')


def check_norm(norm: str) -> str:
  if not isinstance(norm, str) or norm not in NORMS:
    raise ValueError(f'Unknown norm {norm!r}. Valid: {", ".join(NORMS)}.')
  return norm


def _feature_axes(x: jax.Array) -> tuple[int, ...]:
  return tuple(range(1, x.ndim))


def broadcast_eps(eps: jax.Array, x: jax.Array) -> jax.Array:
  """Scalar or `[B]` eps -> `[B, 1, ..., 1]` in `x.dtype`."""
  eps = jnp.asarray(eps, x.dtype)
  eps = jnp.broadcast_to(eps, x.shape[:1])
  return eps.reshape(x.shape[:1] + (1,) * (x.ndim - 1))


def per_example_norm(d: jax.Array, norm: str) -> jax.Array:
  """L-inf or L2 norm of each example of `d [B, ...]`, shape `[B]`."""
  axes = _feature_axes(d)
  if norm == 'linf':
    return jnp.max(jnp.abs(d), axis=axes, initial=0.0)
  return jnp.sqrt(jnp.sum(jnp.square(d), axis=axes))


def _keepdims_l2(d: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.sum(jnp.square(d), axis=_feature_axes(d),
                          keepdims=True))


def ascent_direction(g: jax.Array, norm: str) -> jax.Array:
  """Steepest-ascent unit step for the norm: `sign(g)` or `g / ||g||_2`.

  The L2 direction is rescaled by the per-example max |g| first so tiny
  gradients (saturated softmax) do not underflow when squared; a zero gradient
  gives a zero step.
  """
  if norm == 'linf':
    return jnp.sign(g)
  scale = jnp.max(jnp.abs(g), axis=_feature_axes(g), keepdims=True,
                  initial=0.0)
  g = g / jnp.where(scale > 0, scale, 1.0)
  n = _keepdims_l2(g)
  return g / jnp.where(n > 0, n, 1.0)


def project(delta: jax.Array, eps_b: jax.Array, norm: str) -> jax.Array:
  """Projects each example of `delta` onto the norm ball of radius `eps_b`."""
  if norm == 'linf':
    return jnp.clip(delta, -eps_b, eps_b)
  n = _keepdims_l2(delta)
  factor = jnp.where(n > eps_b, eps_b / jnp.where(n > 0, n, 1.0), 1.0)
  return delta * factor


def random_unit(key: jax.Array, x: jax.Array, norm: str) -> jax.Array:
  """Per example `t / ||t||`, t uniform in [-1, 1] (L-inf) or Gaussian (L2):
  the direction of APGD's and FAB's random starts (as AutoAttack's)."""
  if norm == 'linf':
    t = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
  else:
    t = jax.random.normal(key, x.shape, x.dtype)
  n = per_example_norm(t, norm).reshape(x.shape[:1] + (1,) * (x.ndim - 1))
  return t / jnp.where(n > 0, n, 1.0)


def random_init(key: jax.Array, x: jax.Array, eps_b: jax.Array,
                norm: str) -> jax.Array:
  """A perturbation drawn uniformly from the ball of radius `eps_b`."""
  if norm == 'linf':
    return jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * eps_b
  k_dir, k_rad = jax.random.split(key)
  d = jax.random.normal(k_dir, x.shape, x.dtype)
  d = d / jnp.maximum(_keepdims_l2(d), jnp.finfo(x.dtype).tiny)
  dim = max(1, int(x[0].size))
  u = jax.random.uniform(k_rad, eps_b.shape, x.dtype)
  return d * eps_b * u ** (1.0 / dim)
