"""Audio budgets in decibels in the pipeline: `threat.eps_units = 'dB'`.

A waveform threat (Speech Commands' 'waveform' input or signal space) may
state its eps grid as SNR budgets in dB (`tinyrobust.attacks.snr`): each
budget `s` becomes the relative amplitude `r = 10^(-s / 20)` and every
attack is wrapped by `snr.relative_attack`, so the radius of example i is

    L2:    eps_i = ||x_i||_2 * r          (SNR_i >= s on the L2 ball)
    L-inf: eps_i = rms(x_i) * r           (a full-scale +-eps_i delta has
                                           SNR_i = s)

The evaluator runs on the r grid (ascending; +inf dB is r = 0, no attack);
`annotate` reports every eps both ways: `eps_db` and the radius in
waveform units (mean, min and max over the evaluated clips). A universal
perturbation has one radius for all clips: `universal_eps` states it
against the mean clip energy of the training split
(`snr.universal_eps_from_snr_db`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from tinyrobust.attacks import config as attack_config_lib
from tinyrobust.attacks import registry
from tinyrobust.attacks import snr

UNITS = 'dB'
# Threat eps units a dB budget is defined on (a waveform's amplitude).
WAVEFORM_UNITS = ('waveform',)


def is_db(units: str | None) -> bool:
  return units == UNITS


def check_db_threat(units: str, allowed: Sequence[str], dataset: str,
                    space: str) -> None:
  """dB only where the eps units would be a waveform's amplitude."""
  if not any(u in WAVEFORM_UNITS for u in allowed):
    raise ValueError(
        f"threat.eps_units='dB' is an SNR budget of a waveform; space="
        f'{space!r} on {dataset!r} has eps units {", ".join(allowed) or "(none)"}'
        " (use Speech Commands with features='waveform', or its space="
        "'signal').")


def ratio_grid(db_grid: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
  """`(ratios ascending [E], dB in the same order [E])` from a dB grid.

  Raises:
    ValueError: a grid that is not a non-empty list of finite numbers or
      +inf (no perturbation), or that repeats a budget.
  """
  db = np.asarray(db_grid, np.float64) if db_grid is not None else None
  if db is None or db.ndim != 1 or not db.size or np.any(np.isnan(db)) or \
      np.any(db == -np.inf):
    raise ValueError(f'attack.eps_grid in dB must be a non-empty list of SNR '
                     f'budgets (finite dB, or inf for no perturbation), got '
                     f'{db_grid!r}.')
  if len(set(db.tolist())) != db.size:
    raise ValueError(f'attack.eps_grid in dB repeats a budget: '
                     f'{db.tolist()}.')
  order = np.argsort(-db)  # loudest last: r ascending
  return snr.ratio_from_snr_db(db[order]), db[order]


def relative_attacks(apply_fn, acfg, *, clip, eps_scale=None
                     ) -> dict[str, registry.Attack]:
  """The `attack` section's attacks, each reading eps as a ratio r."""
  options = attack_config_lib.with_eps_scale(
      attack_config_lib.attack_options(acfg, clip=clip), acfg.attacks,
      eps_scale)
  out = {}
  for name in acfg.attacks:
    rec = registry.get_attack(name, apply_fn, **options[name])
    out[name] = snr.relative_attack(rec, norm=acfg.norm)
  return out


def radii(x: Any, ratios: Sequence[float], norm: str) -> list[dict]:
  """Per ratio, the per-clip radius in waveform units: mean, min, max."""
  out = []
  for r in ratios:
    e = np.asarray(snr.relative_eps(np.asarray(x), float(r), norm=norm),
                   np.float64)
    out.append({'mean': float(e.mean()), 'min': float(e.min()),
                'max': float(e.max())})
  return out


def annotate(results: dict[str, Any], x: Any, db: np.ndarray,
             norm: str) -> None:
  """Adds `eps_db` and the radius (`eps_<norm>_mean/min/max`) to every
  per-eps entry and row of an evaluator result on the r grid, and the
  conversion's protocol as `results['eps_protocol']`."""
  ratios = np.asarray(results['eps_grid'], np.float64)
  rad = radii(x, ratios, norm)
  by_eps = {float(r): (float(d), q) for r, d, q in zip(ratios, db, rad)}

  def fields(eps):
    d, q = by_eps[float(eps)]
    return {'eps_db': d, **{f'eps_{norm}_{k}': v for k, v in q.items()}}

  for res in results['attacks'].values():
    for p in res['per_eps']:
      p.update(fields(p['eps']))
  for row in results.get('rows', ()):
    if 'eps' in row and float(row['eps']) in by_eps:
      row.update(fields(row['eps']))
  results['eps_protocol'] = snr.protocol(norm)
  results['eps_grid_db'] = [float(d) for d in db]


def universal_eps(x_train: Any, db: float, norm: str) -> float:
  """A universal perturbation's radius for an SNR budget of `db` dB."""
  return snr.universal_eps_from_snr_db(np.asarray(x_train), float(db),
                                       norm=norm)


def evaluator_overrides(problem, acfg, units: str
                        ) -> tuple[dict[str, Any], Any]:
  """`(overrides, db)` for `runs.robustness` on a threat problem whose
  checked `threat.eps_units` is `units`: for 'dB' the relative attacks and
  the r grid (and the dB grid, for `annotate`); otherwise `({}, None)`."""
  if not is_db(units):
    return {}, None
  ratios, db = ratio_grid(acfg.eps_grid)
  attacks = relative_attacks(problem.apply_fn, acfg, clip=problem.clip,
                             eps_scale=problem.eps_scale)
  return {'attacks': attacks, 'eps_grid': ratios.tolist()}, db
