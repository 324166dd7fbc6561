"""Audio budgets in decibels: a signal-to-noise ratio as a per-example radius.

A waveform attacker is naturally limited by how loud the perturbation is
relative to the clip it is added to, not by an absolute amplitude. With
`E(a) = sum_i a_i^2` over one example's samples (all features, `D` values)
and `rms(a) = sqrt(E(a) / D)`, the SNR of a perturbation `delta` on `x` is

    SNR_dB(x, delta) = 10 log10(E(x) / E(delta))

and a budget of `snr` dB is converted to each example's radius by

* L2:    `eps = ||x||_2 * 10^(-snr / 20)`, so `||delta||_2 <= eps` means
  SNR >= snr (equality on the sphere);
* L-inf: `eps = rms(x) * 10^(-snr / 20)`, the per-sample bound at which a
  full-scale `+-eps` perturbation (the loudest one in the box) has exactly
  SNR = snr; any `|delta_i| <= eps` has SNR >= snr.

Radii are in the units of `x`. Higher dB means a quieter, weaker attack;
`snr = +inf` gives eps = 0 (no perturbation); a silent clip gets eps = 0.

Every kernel takes eps as a scalar or `[B]`, so a per-example radius goes
straight in: `attack(variables, x, y, key, eps_from_snr_db(x, 30.0,
norm='linf'))`.

An eps grid in dB for the evaluator. The evaluator (and its scheduler,
which reuses an adversarial example found at a smaller eps at every larger
one and skips eps = 0) needs an eps that grows with the ball and is 0 for
no perturbation; dB does neither (larger dB is a smaller ball, 0 dB a loud
one). So `relative_attack` wraps a kernel whose eps argument is the
*relative amplitude* `r = 10^(-snr / 20)` (`ratio_from_snr_db`): the radius
is `r * ||x_i||_2` (L2) or `r * rms(x_i)` (L-inf), r = 0 is the identity and
the balls grow with r. A dB grid is passed as `ratio_from_snr_db(grid)`
and reported back with `snr_db_from_ratio`. A universal perturbation has
one radius for every clip: `universal_eps_from_snr_db` states it relative
to the mean clip energy of a set.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tinyrobust.attacks import checks
from tinyrobust.attacks import norms
from tinyrobust.attacks import registry

RATIO_UNITS = 'relative amplitude r = 10^(-SNR_dB / 20)'
FORMULAS = {
    'l2': 'eps_i = ||x_i||_2 * 10^(-snr_db / 20)  (||delta_i||_2 <= eps_i '
          'means SNR_i >= snr_db)',
    'linf': 'eps_i = rms(x_i) * 10^(-snr_db / 20), rms(x_i) = '
            'sqrt(mean_j x_ij^2)  (a full-scale +-eps_i perturbation has '
            'SNR_i = snr_db)',
}
SNR_DEFINITION = 'SNR_dB(x, delta) = 10 log10(sum x^2 / sum delta^2) per example'


def _check_x(x: Any) -> None:
  if np.ndim(x) < 2:
    raise ValueError(f'x must be a batch [B, ...] of at least 2 axes (one '
                     f'example per row), got shape {np.shape(x)}.')
  if not np.issubdtype(np.result_type(x), np.floating):
    raise ValueError(f'x must be floating point, got dtype '
                     f'{np.result_type(x)}.')


def _check_snr(snr_db: Any, batch: int | None) -> None:
  if checks.is_traced(snr_db):
    return
  s = np.asarray(snr_db)
  if s.dtype == bool or not (np.issubdtype(s.dtype, np.floating)
                             or np.issubdtype(s.dtype, np.integer)):
    raise ValueError(f'snr_db must be a real number or [B] array (dB), got '
                     f'{snr_db!r}.')
  if batch is not None and s.shape not in ((), (batch,)):
    raise ValueError(f'snr_db must be a scalar or have shape [B] = [{batch}],'
                     f' got shape {s.shape}.')
  if np.any(np.isnan(s)) or np.any(s == -np.inf):
    raise ValueError(f'snr_db must be finite or +inf (no perturbation), got '
                     f'{s.tolist()}.')


def _energy(a: jax.Array) -> jax.Array:
  """`[B]` sum of squares over each example's values, in float32 or wider."""
  a = jnp.asarray(a)
  a = a.astype(jnp.promote_types(a.dtype, jnp.float32))
  return jnp.sum(jnp.square(a), axis=tuple(range(1, a.ndim)))


def ratio_from_snr_db(snr_db: Any) -> Any:
  """Relative amplitude `r = 10^(-snr_db / 20)` (+inf dB -> 0); numbers,
  NumPy or JAX arrays alike."""
  return 10.0 ** (-snr_db / 20.0) if isinstance(snr_db, jax.Array) else \
      np.power(10.0, -np.asarray(snr_db, np.float64) / 20.0)


def snr_db_from_ratio(ratio: Any) -> np.ndarray:
  """`-20 log10(r)` in dB (r = 0 -> +inf), as float64 NumPy."""
  r = np.asarray(ratio, np.float64)
  with np.errstate(divide='ignore'):
    return -20.0 * np.log10(r)


def relative_eps(x: Any, ratio: Any, *, norm: str) -> jax.Array:
  """Per-example radius `[B]`: `ratio * ||x_i||_2` (L2) or `ratio *
  rms(x_i)` (L-inf), `ratio` a scalar or `[B]` >= 0. Traceable."""
  norms.check_norm(norm)
  _check_x(x)
  x = jnp.asarray(x)
  e = _energy(x)
  if norm == 'linf':
    e = e / max(1, int(np.prod(x.shape[1:])))
  return (jnp.sqrt(e) * jnp.asarray(ratio, e.dtype)).astype(x.dtype)


def eps_from_snr_db(x: Any, snr_db: Any, *, norm: str) -> jax.Array:
  """Per-example radius for an SNR budget (formulas in the module docstring).

  Args:
    x: `[B, ...]` clean waveforms (any units; eps comes out in the same).
    snr_db: scalar or `[B]` SNR in dB; +inf means no perturbation.
    norm: 'l2' (`||x_i||_2 10^(-snr/20)`) or 'linf' (`rms(x_i) 10^(-snr/20)`).

  Returns:
    `[B]` radii in `x.dtype`, >= 0. Traceable (jit/vmap over snr_db).

  Raises:
    ValueError: bad norm, x that is not a floating batch, or an snr_db that
      is NaN, -inf or of the wrong shape (concrete values only).
  """
  norms.check_norm(norm)
  _check_x(x)
  _check_snr(snr_db, np.shape(x)[0])
  return relative_eps(x, 10.0 ** (-jnp.asarray(snr_db, jnp.float32) / 20.0),
                      norm=norm)


def universal_eps_from_snr_db(x: Any, snr_db: float, *, norm: str) -> float:
  """One radius for a whole set, relative to its mean clip energy.

  The same formulas as `eps_from_snr_db` with `E(x_i)` replaced by its mean
  over the set, so a universal perturbation at the returned radius has the
  requested SNR against a clip of average energy (quieter clips see a lower
  SNR, louder ones a higher).

  Args:
    x: `[N, ...]` clips (e.g. the training split the perturbation is fit on).
    snr_db: finite SNR in dB.
    norm: 'l2' or 'linf'.

  Returns:
    The radius as a Python float, in the units of x.
  """
  norms.check_norm(norm)
  _check_x(x)
  _check_snr(snr_db, None)
  if np.ndim(snr_db) != 0:
    raise ValueError(f'snr_db must be one number for a universal radius, got '
                     f'shape {np.shape(snr_db)}.')
  x = np.asarray(x, np.float64)
  e = float(np.mean(np.sum(np.square(x.reshape(len(x), -1)), axis=1)))
  if norm == 'linf':
    e /= max(1, int(np.prod(x.shape[1:])))
  return float(np.sqrt(e) * 10.0 ** (-float(snr_db) / 20.0))


def snr_db(x: Any, delta: Any) -> jax.Array:
  """Per-example SNR `10 log10(E(x_i) / E(delta_i))` in dB, shape `[B]`.

  `delta_i = 0` gives +inf; a silent clip with a non-zero delta gives -inf.
  `x` and `delta` must have the same shape `[B, ...]`.
  """
  _check_x(x)
  if np.shape(delta) != np.shape(x):
    raise ValueError(f'delta must have the shape of x {np.shape(x)}, got '
                     f'{np.shape(delta)}.')
  ex, ed = _energy(x), _energy(delta)
  ratio = ex / jnp.where(ed > 0, ed, 1.0)
  return jnp.where(ed > 0, 10.0 * jnp.log10(ratio), jnp.inf)


def protocol(norm: str) -> dict[str, str]:
  """The conversion as it goes in a results record: units, formula, SNR."""
  norms.check_norm(norm)
  return {'eps_units': 'dB', 'norm': norm, 'formula': FORMULAS[norm],
          'snr_definition': SNR_DEFINITION, 'grid_units': RATIO_UNITS}


def relative_attack(attack: registry.Attack, *,
                    norm: str | None = None) -> registry.Attack:
  """`attack` with its eps argument read as a relative amplitude r.

  The returned kernel calls `attack(variables, x, y, key, relative_eps(x,
  r, norm=norm))`: the radius is `r * ||x_i||_2` (L2) or `r * rms(x_i)`
  (L-inf), i.e. an SNR of `-20 log10(r)` dB. It stays pure and vmappable
  over a grid of r; r = 0 is the identity and larger r a larger ball, so an
  evaluator's eps grid (and its nested-eps scheduler) works unchanged with
  `eps_grid = ratio_from_snr_db(db_grid)`.

  Args:
    attack: an `Attack` record (or a kernel) taking a per-example eps.
    norm: the conversion's norm; default `attack.config['norm']`.

  Returns:
    An `Attack` with the wrapped name (metric keys unchanged) whose config
    is the wrapped one plus `eps_units` (the ratio's definition) and the
    dB `formula` of `protocol(norm)`.
  """
  attack = registry.as_attack(getattr(attack, 'name', 'attack'), attack)
  norm = norm if norm is not None else attack.config.get('norm')
  if norm is None:
    raise ValueError(f'Attack {attack.name!r} has no norm in its config; pass '
                     f'norm= (one of {", ".join(norms.NORMS)}).')
  norms.check_norm(norm)

  def kernel(variables, x, y, key, ratio):
    return attack(variables, x, y, key, relative_eps(x, ratio, norm=norm))

  config = dict(attack.config)
  config.update(protocol(norm), eps_units=RATIO_UNITS)
  return registry.Attack(name=attack.name, config=config, kernel=kernel)
