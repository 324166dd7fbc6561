"""Counts -> rates, flags and table rows: the one metric definition.

Metrics per attack and eps (denominator: every evaluated example):

* `clean_accuracy`: prediction on x equals the label.
* `robust_accuracy`: prediction on x AND on x_adv equal the label, over all
  examples (clean errors count as non-robust, as in AutoAttack), so it never
  exceeds clean accuracy and equals it at eps=0.
* `consistency`: the study's "adversarial accuracy", prediction on x_adv
  equals the prediction on x (not the label).

A non-finite logit or adversarial input never counts as a prediction
(argmax of NaN is 0): it counts as wrong (`outcomes`) and raises the
`nonfinite_*` flags. `outcomes` is used by the float evaluator
(`robustness.RobustnessEvaluator`) and the int8 one (`deployed`) alike;
`per_eps_rates` turns its counts into rates for both.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from absl import logging
import jax.numpy as jnp
import numpy as np

from tinyrobust import attacks as attacks_lib
from tinyrobust import fileio
from tinyrobust.evaluation import sanity


def finite_rows(a, batch_axes: int):
  """True where every value of an example (trailing axes) is finite."""
  return jnp.all(jnp.isfinite(a), axis=tuple(range(batch_axes, a.ndim)))


def outcomes(y, clean_pred, clean_finite, adv_pred, adv_finite
             ) -> dict[str, Any]:
  """Per-example outcomes: the one definition of the three metrics.

  Args:
    y: labels `[N]`.
    clean_pred, clean_finite: top-1 on x and whether its logits are all
      finite, `[N]`.
    adv_pred, adv_finite: top-1 on x_adv and whether its logits AND x_adv
      are all finite, `[E, N]`.

  Returns:
    Booleans `{'clean' [N], 'robust' [E, N], 'consistent' [E, N]}`; a
    non-finite clean or adversarial row is never correct nor consistent.
  """
  ok = (clean_pred == y) & clean_finite
  return {'clean': ok,
          'robust': (adv_pred == y) & ok & adv_finite,
          'consistent': (adv_pred == clean_pred) & adv_finite & clean_finite}


def per_eps_rates(eps_grid: Sequence[float], robust, consistent,
                  adv_nonfinite, n: int) -> list[dict[str, Any]]:
  """Counts per eps -> `{eps, robust_correct, robust_accuracy, consistent,
  consistency, adv_nonfinite}` with denominator `n`."""
  return [{'eps': float(e), 'robust_correct': int(r),
           'robust_accuracy': float(r) / n, 'consistent': int(k),
           'consistency': float(k) / n, 'adv_nonfinite': int(bad)}
          for e, r, k, bad in zip(eps_grid, robust, consistent,
                                  adv_nonfinite)]


def _noise_baseline(noise_counts, eps_grid, n: int) -> dict[str, Any]:
  return {'per_eps': [
      {'eps': float(e), 'robust_correct': int(r),
       'robust_accuracy': float(r) / n}
      for e, r in zip(eps_grid, noise_counts['robust'])]}


def summarize(counts: Mapping[str, Mapping[str, Any]],
              attacks: Mapping[str, Any], eps_grid: Sequence[float],
              n: int, *, noise_counts: Mapping[str, Any] | None = None,
              model_flags: Sequence[Mapping[str, Any]] = (),
              range_width: float | None = None) -> dict[str, Any]:
  """Rates, sanity flags and CSV rows from `RobustnessEvaluator.run` counts.

  Pure (no JAX): `attacks` maps each name to its record (for `name` as the
  kind, and `config`). `noise_counts` (random noise of the same norm and
  eps, `sanity.make_noise`) adds the noise baseline and its flags;
  `model_flags` come from `sanity.model_checks`. At eps >= `range_width`
  (the narrowest clip range) a gradient attack must leave ~no example
  robust (`robust_at_large_eps`).
  """
  per_attack = {}
  for name, c in counts.items():
    rec = attacks_lib.as_attack(name, attacks[name])
    per_attack[name] = {
        'kind': rec.name, 'config': fileio.to_jsonable(dict(rec.config)),
        'clean_correct': int(c['clean_correct']),
        'clean_nonfinite': int(c['clean_nonfinite']),
        'per_eps': per_eps_rates(eps_grid, c['robust'], c['consistent'],
                                 c['adv_nonfinite'], n),
    }
    for p, raw in zip(per_attack[name]['per_eps'], c.get('raw_robust', ())):
      p['raw_robust_correct'] = float(raw)  # scheduler: see its docstring
    stages = rec.config.get('stages')
    for p, by in zip(per_attack[name]['per_eps'],
                     c.get('broken_by') or ()):
      if stages and by:  # each stage's own contribution (first to break)
        p['broken_by'] = {s: int(by.get(i, 0)) for i, s in enumerate(stages)}
  first = next(iter(per_attack.values()))
  clean_correct = first['clean_correct']
  flags = sanity.sanity_flags(per_attack) + [dict(f) for f in model_flags]
  noise = None
  if noise_counts is not None:
    noise = _noise_baseline(noise_counts, eps_grid, n)
    flags += sanity.compare_flags(per_attack, noise)
  for name, res in per_attack.items():
    for p in res['per_eps']:
      if range_width is not None and p['eps'] >= range_width and \
          res['kind'] not in sanity.BLACKBOX:
        flags += sanity.large_eps_flags(name, p['robust_accuracy'], p['eps'])
  rows = _rows(per_attack, flags, clean_correct, n)
  for f in flags:
    logging.warning('Sanity flag: %s', f)
  return {
      'num_examples': n, 'denominator': n, 'clean_correct': clean_correct,
      'clean_accuracy': clean_correct / n,
      'eps_grid': [float(e) for e in eps_grid], 'attacks': per_attack,
      'flags': flags, 'sanity_ok': not flags, 'rows': rows,
      'noise_baseline': noise,
  }


def _rows(per_attack, flags, clean_correct: int, n: int) -> list[dict]:
  rows = []
  for name, res in per_attack.items():
    for p in res['per_eps']:
      p['flags'] = [f['type'] for f in flags if f.get('attack') == name
                    and f.get('eps') in (None, p['eps'])]
      rows.append({'attack': name, 'kind': res['kind'], 'eps': p['eps'],
                   'clean_accuracy': clean_correct / n,
                   'robust_accuracy': p['robust_accuracy'],
                   'consistency': p['consistency'],
                   'clean_correct': clean_correct,
                   'robust_correct': p['robust_correct'],
                   'consistent': p['consistent'], 'denominator': n,
                   'flags': ';'.join(p['flags'])})
  return rows


def metrics_at(results: Mapping[str, Any], eps_index: int = 0, *,
               prefix: str = '') -> dict[str, float]:
  """Flat metrics at one eps: `clean_accuracy`, `<name>_consistency`,
  `<name>_robust_accuracy` (and `<name>_s` seconds) for every attack."""
  out = {f'{prefix}clean_accuracy': float(results['clean_accuracy'])}
  for name, res in results['attacks'].items():
    p = res['per_eps'][eps_index]
    out[f'{prefix}{name}_consistency'] = float(p['consistency'])
    out[f'{prefix}{name}_robust_accuracy'] = float(p['robust_accuracy'])
  return out


def zero_counts(n_eps: int) -> dict[str, Any]:
  """Empty per-eps counts (the sweep engine's accumulator)."""
  z = lambda: np.zeros(n_eps, np.int64)
  return {'clean_correct': 0, 'clean_nonfinite': 0, 'robust': z(),
          'consistent': z(), 'adv_nonfinite': z(),
          'broken_by': [{} for _ in range(n_eps)],
          'examples': {'clean': [], 'robust': [], 'consistent': []}}


def add_counts(c, outputs, yb, n_valid: int) -> None:
  """Adds one batch's outcomes (`summary.outcomes`) to the counts and
  per-example records."""
  clean_pred, clean_fin, adv_pred, adv_fin, stage = (np.asarray(o)
                                                     for o in outputs)
  yv = np.asarray(yb)[:n_valid]
  for per_eps, st in zip(c['broken_by'], stage[:, :n_valid]):
    for k, count in zip(*np.unique(st[st >= 0], return_counts=True)):
      per_eps[int(k)] = per_eps.get(int(k), 0) + int(count)
  clean_fin = clean_fin[:n_valid]
  adv_fin = adv_fin[:, :n_valid]
  o = outcomes(yv, clean_pred[:n_valid], clean_fin,
                       adv_pred[:, :n_valid], adv_fin)
  c['clean_correct'] += int(o['clean'].sum())
  c['clean_nonfinite'] += int((~clean_fin).sum())
  c['robust'] += o['robust'].sum(axis=1)
  c['consistent'] += o['consistent'].sum(axis=1)
  c['adv_nonfinite'] += (~adv_fin).sum(axis=1)
  for k in ('clean', 'robust', 'consistent'):
    c['examples'][k].append(o[k])
