"""The search study's shared definitions: arms, metrics, the claim, and
the paired verdict (read by both the runner and the report)."""

from __future__ import annotations

from typing import Any

import numpy as np

ARMS = ('handcrafted', 'noadv', 'adv')
METRICS = ('test_accuracy', 'test_fgsm_consistency',
           'test_fgsm_robust_accuracy', 'test_pgd_consistency',
           'test_pgd_robust_accuracy', 'flash_bytes', 'sram_bytes', 'flops',
           'search_s')
CLAIM_POINTS = 9.0  # the study: +9 points of adversarial accuracy


def paired_differences(rows, metric: str = 'test_fgsm_consistency'):
  """adv minus noadv of `metric` per (model, board, seed), in points."""
  by = {(r['model'], r['board'], r['seed'], r['arm']): r for r in rows}
  out = []
  for (m, b, seed, arm), r in sorted(by.items()):
    if arm != 'adv' or (m, b, seed, 'noadv') not in by:
      continue
    d = 100.0 * (r[metric] - by[(m, b, seed, 'noadv')][metric])
    out.append({'model': m, 'board': b, 'seed': seed, 'metric': metric,
                'adv_minus_noadv_points': d})
  return out


def verdict(pairs, *, bootstrap: int = 1000, seed: int = 0,
            claim: float = CLAIM_POINTS) -> dict[str, Any]:
  """The study's claim judged from paired differences (bootstrap over
  pairs): holds / hurts / inconclusive, and whether +claim is in the CI."""
  d = np.asarray([p['adv_minus_noadv_points'] for p in pairs], np.float64)
  d = d[np.isfinite(d)]
  if not d.size:
    return {'verdict': 'no pairs', 'n_pairs': 0, 'text': 'No paired runs.'}
  rng = np.random.default_rng(seed)
  boots = d[rng.integers(0, d.size, (int(bootstrap), d.size))].mean(1)
  lo, hi = (float(q) for q in np.percentile(boots, [2.5, 97.5]))
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
