"""Rates with confidence intervals for transfer results.

`rate_ci` gives a rate `k / n` with a Wilson or paired-bootstrap interval;
`transfer_finding` pools it over the (source, target) pairs of a
`transfer.TransferResult` at one eps ("examples crafted on the large models
transfer to the TinyML models at rate r, 95% CI"). Re-exported by
`tinyrobust.evaluation.transfer`.
"""

from __future__ import annotations

import statistics
from typing import Any, Sequence

import numpy as np


def rate_ci(success: Any, valid: Any = None, *, method: str = 'wilson',
            level: float = 0.95, n_boot: int = 2000,
            seed: int = 0) -> dict[str, Any]:
  """A rate `k / n` with its confidence interval.

  Args:
    success: bool `[N]`, or `[P, N]` for P pairs sharing the N examples
      (e.g. several (source, target) pairs): the pooled rate.
    valid: bool of the same shape, the denominator's members (e.g. the
      target classified the example correctly); default all.
    method: 'wilson' (score interval; `[N]` only, independent trials) or
      'bootstrap' (percentile, resampling the N examples, so pairs that share
      an example move together).
    level: confidence level in (0, 1).
    n_boot: bootstrap resamples.
    seed: the bootstrap's seed.

  Returns:
    {'rate', 'lo', 'hi', 'k', 'n', 'level', 'method'}; rate/lo/hi are None
    when n = 0.
  """
  s = np.asarray(success, bool)
  v = np.ones_like(s) if valid is None else np.asarray(valid, bool)
  if s.ndim not in (1, 2) or v.shape != s.shape:
    raise ValueError(f'success must be [N] or [P, N] and valid the same '
                     f'shape, got {s.shape} and {v.shape}.')
  if not 0 < level < 1:
    raise ValueError(f'level must be in (0, 1), got {level!r}.')
  if method not in ('wilson', 'bootstrap'):
    raise ValueError(f"method must be 'wilson' or 'bootstrap', got "
                     f'{method!r}.')
  if method == 'wilson' and s.ndim == 2 and s.shape[0] > 1:
    raise ValueError("method='wilson' assumes independent trials; pooled "
                     "pairs share examples: use method='bootstrap'.")
  s2, v2 = np.atleast_2d(s & v), np.atleast_2d(v)
  k, n = int(s2.sum()), int(v2.sum())
  out = {'k': k, 'n': n, 'level': level, 'method': method,
         'rate': None, 'lo': None, 'hi': None}
  if n == 0:
    return out
  out['rate'] = k / n
  if method == 'wilson':
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
    p, d = k / n, 1 + z * z / n
    mid = (p + z * z / (2 * n)) / d
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    out['lo'], out['hi'] = float(max(0.0, mid - half)), float(
        min(1.0, mid + half))
    return out
  ks, ns = s2.sum(0), v2.sum(0)
  idx = np.random.default_rng(seed).integers(0, s2.shape[1],
                                             (n_boot, s2.shape[1]))
  kb, nb = ks[idx].sum(1), ns[idx].sum(1)
  rates = kb[nb > 0] / nb[nb > 0]
  lo, hi = np.quantile(rates, [0.5 - level / 2, 0.5 + level / 2])
  out.update(lo=float(lo), hi=float(hi), n_boot=int(n_boot))
  return out


def transfer_finding(result, *, sources: Sequence[str],
                     targets: Sequence[str], eps: float,
                     metric: str = 'transfer', level: float = 0.95,
                     seed: int = 0) -> dict[str, Any]:
  """A pooled rate over (source, target) pairs at one eps, with its CI.

  `metric='transfer'`: transfer success rate (denominator: examples the
  target classifies correctly); 'robust': robust accuracy (all examples).
  Pairs with source == target (white-box) are left out. The interval is a
  paired bootstrap over the examples (`rate_ci`). `result` is a
  `transfer.TransferResult`.
  """
  if metric not in ('transfer', 'robust'):
    raise ValueError(f"metric must be 'transfer' or 'robust', got "
                     f'{metric!r}.')
  hit = np.flatnonzero(np.isclose(result.eps_grid, eps, rtol=1e-6,
                                  atol=1e-12))
  if not hit.size:
    raise ValueError(f'eps={eps} is not in the grid '
                     f'{result.eps_grid.tolist()}.')
  pairs = [(s, t) for s in sources for t in targets
           if s != t and (s, t) in result.examples]
  missing = [(s, t) for s in sources for t in targets
             if s != t and (s, t) not in result.examples]
  if missing or not pairs:
    raise ValueError(f'No transfer outcomes for pairs {missing or "(none)"}; '
                     f'have {sorted(result.examples)}.')
  e = int(hit[0])
  ex = [result.examples[p] for p in pairs]
  if metric == 'transfer':
    succ = np.stack([x['transferred'][e] for x in ex])
    valid = np.stack([x['clean'] for x in ex])
  else:
    succ, valid = np.stack([x['robust'][e] for x in ex]), None
  ci = rate_ci(succ, valid, method='bootstrap', level=level, seed=seed)
  eps_e = float(result.eps_grid[e])
  rate = ('undefined (no example in the denominator)' if ci['rate'] is None
          else f'{ci["rate"]:.3f} ({level:.0%} CI {ci["lo"]:.3f}-'
          f'{ci["hi"]:.3f})')
  src, tgt = ', '.join(sources), ', '.join(targets)
  ci.update(pairs=[list(p) for p in pairs], eps=eps_e, metric=metric,
            statement=(
                f'examples crafted on {src} transfer to {tgt} at rate {rate}'
                if metric == 'transfer' else
                f'{tgt} keep robust accuracy {rate} against examples crafted '
                f'on {src}') + f' ({len(pairs)} pairs, eps={eps_e:g})')
  return ci
