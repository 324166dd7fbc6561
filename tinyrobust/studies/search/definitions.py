"""The search study's shared definitions: arms, metrics, the claim, and
the paired verdicts (read by both the runner and the report)."""

from __future__ import annotations

from typing import Any

import numpy as np

ARMS = ('handcrafted', 'noadv', 'adv', 'advtrain')
# Arms that train the hand-set model (no search).
TRAINED_ARMS = ('handcrafted', 'advtrain')
# Fields of a run's final model.
FINAL_METRICS = ('test_accuracy', 'test_fgsm_consistency',
                 'test_fgsm_robust_accuracy', 'test_pgd_consistency',
                 'test_pgd_robust_accuracy', 'flash_bytes', 'sram_bytes',
                 'flops')
# A run's cost: wall time and gradient evaluations (`grad_evals`).
METRICS = FINAL_METRICS + ('search_s', 'grad_evals')
CLAIM_POINTS = 9.0  # the study: +9 points of adversarial accuracy
# The verdicts: (name, arm, baseline, metric); the first is the study's
# claim (judged against CLAIM_POINTS), the others compare the search with
# the adversarial term to adversarial training of the hand-set model.
COMPARISONS = (
    ('adv_vs_noadv', 'adv', 'noadv', 'test_fgsm_consistency'),
    ('adv_vs_advtrain', 'adv', 'advtrain', 'test_fgsm_consistency'),
    ('adv_vs_advtrain_pgd', 'adv', 'advtrain', 'test_pgd_robust_accuracy'))


def paired_differences(rows, metric: str = 'test_fgsm_consistency', *,
                       arm: str = 'adv', baseline: str = 'noadv'):
  """`arm` minus `baseline` of `metric` per (model, board, seed), in
  points (field `<arm>_minus_<baseline>_points`)."""
  by = {(r['model'], r['board'], r['seed'], r['arm']): r for r in rows}
  out = []
  for (m, b, seed, a), r in sorted(by.items()):
    if a != arm or (m, b, seed, baseline) not in by:
      continue
    d = 100.0 * (r[metric] - by[(m, b, seed, baseline)][metric])
    out.append({'model': m, 'board': b, 'seed': seed, 'metric': metric,
                f'{arm}_minus_{baseline}_points': d})
  return out


def _bootstrap(pairs, key, bootstrap, seed):
  d = np.asarray([p[key] for p in pairs], np.float64)
  d = d[np.isfinite(d)]
  if not d.size:
    return d, float('nan'), float('nan')
  rng = np.random.default_rng(seed)
  boots = d[rng.integers(0, d.size, (int(bootstrap), d.size))].mean(1)
  lo, hi = (float(q) for q in np.percentile(boots, [2.5, 97.5]))
  return d, lo, hi


def _too_few(d, what: str, diff: str) -> dict[str, Any]:
  """No verdict from fewer than 2 pairs (a bootstrap of one value has no
  spread)."""
  if not d.size:
    return {'verdict': 'no pairs', 'n_pairs': 0,
            'text': f'{what}: no paired runs.'}
  return {'verdict': 'too few pairs', 'n_pairs': 1,
          'mean_points': float(d[0]),
          'text': f'{what}: one paired run ({diff} = {float(d[0]):+.1f} '
                  'points), no interval and no verdict: at least 2 seeds '
                  'are needed.'}


def compare(pairs, *, arm: str, baseline: str, metric: str,
            bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
  """`arm` vs `baseline` judged from paired differences of `metric`
  (bootstrap over pairs): 'better' / 'worse' (95% interval above / below
  0) / 'inconclusive'."""
  key = f'{arm}_minus_{baseline}_points'
  d, lo, hi = _bootstrap(pairs, key, bootstrap, seed)
  what = metric.replace('test_', '').replace('_', ' ')
  if d.size < 2:
    return _too_few(d, f'{arm} vs {baseline} on {what}',
                    f'{arm} - {baseline}')
  mean = float(d.mean())
  v = 'better' if lo > 0 else 'worse' if hi < 0 else 'inconclusive'
  how = {'better': f'{arm} is more robust than {baseline}',
         'worse': f'{arm} is LESS robust than {baseline}',
         'inconclusive': f'{arm} and {baseline} are not distinguishable'}[v]
  text = (f'{arm} vs {baseline} on {what}: {how} ({arm} - {baseline} = '
          f'{mean:+.1f} points, 95% bootstrap CI [{lo:+.1f}, {hi:+.1f}] '
          f'over {d.size} paired runs).')
  return {'verdict': v, 'mean_points': mean, 'ci95_points': [lo, hi],
          'n_pairs': int(d.size), 'metric': metric, 'arm': arm,
          'baseline': baseline, 'text': text}


def verdict(pairs, *, bootstrap: int = 1000, seed: int = 0,
            claim: float = CLAIM_POINTS) -> dict[str, Any]:
  """The study's claim judged from paired differences (bootstrap over
  pairs): holds / hurts / inconclusive, and whether +claim is in the CI."""
  d, lo, hi = _bootstrap(pairs, 'adv_minus_noadv_points', bootstrap, seed)
  if d.size < 2:
    return _too_few(d, 'The claim (adv vs noadv on FGSM consistency)',
                    'adv - noadv')
  mean = float(d.mean())
  if lo > 0:
    what = 'holds: the adversarial term raises FGSM consistency'
    v = 'holds'
  elif hi < 0:
    what = 'does not hold: the adversarial term lowers FGSM consistency'
    v = 'hurts'
  else:
    what = 'is inconclusive: the difference is not distinguishable from 0'
    v = 'inconclusive'
  inside = lo - 1e-9 <= claim <= hi + 1e-9
  text = (f'The claim {what} (adv - noadv = {mean:+.1f} points, 95% '
          f'bootstrap CI [{lo:+.1f}, {hi:+.1f}] over {d.size} paired '
          f'searches); the study\'s +{claim:g} points is '
          f'{"inside" if inside else "outside"} this interval.')
  return {'verdict': v, 'mean_points': mean, 'ci95_points': [lo, hi],
          'n_pairs': int(d.size), 'claim_points': claim,
          'claim_inside_ci': bool(inside), 'text': text}
