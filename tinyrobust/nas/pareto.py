"""Pareto set of finished trials over (accuracy, consistency, flash, SRAM).

Accuracy and the adversarial term's consistency (validation; FGSM by
default, `adversarial_key`) are maximised, flash and SRAM bytes minimised. `pareto_mask` is the plain O(n^2) non-domination test (a
search has tens to hundreds of trials). `write_pareto` writes the set as CSV
and a two-panel plot (matplotlib, Agg backend, no display needed).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from tinyrobust import fileio

DEFAULT_ADVERSARIAL_KEY = 'val_fgsm_consistency'


def axes(adversarial_key: str = DEFAULT_ADVERSARIAL_KEY
         ) -> tuple[tuple[str, int], ...]:
  """(record key in `metrics`, sense): +1 maximise, -1 minimise."""
  return (('val_accuracy', 1), (adversarial_key, 1), ('flash_bytes', -1),
          ('sram_bytes', -1))


def pareto_mask(values: np.ndarray) -> np.ndarray:
  """Non-dominated rows of `values` `[n, k]`, all objectives maximised.

  Row i is dominated when some row j is >= on every column and > on one.
  Exact duplicates are all kept.
  """
  values = np.asarray(values, np.float64)
  if values.ndim != 2:
    raise ValueError(f'values must be [n, k], got shape {values.shape}.')
  n = len(values)
  keep = np.ones(n, bool)
  for i in range(n):
    ge = np.all(values >= values[i], axis=1)
    gt = np.any(values > values[i], axis=1)
    if np.any(ge & gt):
      keep[i] = False
  return keep


def rows(results: Sequence[dict[str, Any]],
         adversarial_key: str = DEFAULT_ADVERSARIAL_KEY
         ) -> list[dict[str, Any]]:
  """Flat CSV rows of the ok trials that have every Pareto axis (and every
  other attack metric they logged)."""
  ax = axes(adversarial_key)
  out = []
  for r in results:
    m = r.get('metrics') or {}
    if r.get('status') != 'ok' or any(
        m.get(k) is None or not np.isfinite(float(m[k])) for k, _ in ax):
      continue
    row = {'trial': r['trial'], 'score': r.get('score')}
    row.update({k: m[k] for k, _ in ax})
    for k in sorted(m):
      if (k.endswith(('_consistency', '_robust_accuracy')) and
          k.startswith('val_')) or k in ('flops', 'params'):
        row.setdefault(k, m[k])
    row.update({f'param_{k}': v for k, v in r['params'].items()})
    out.append(row)
  return out


def pareto_rows(results: Sequence[dict[str, Any]],
                adversarial_key: str = DEFAULT_ADVERSARIAL_KEY
                ) -> list[dict[str, Any]]:
  """The Pareto-optimal rows (see `rows`), best accuracy first."""
  all_rows = rows(results, adversarial_key)
  if not all_rows:
    return []
  vals = np.array([[sense * float(r[k]) for k, sense in axes(adversarial_key)]
                   for r in all_rows])
  mask = pareto_mask(vals)
  front = [r for r, m in zip(all_rows, mask) if m]
  return sorted(front, key=lambda r: -float(r['val_accuracy']))


def write_pareto(results: Sequence[dict[str, Any]], workdir: str, *,
                 title: str = '',
                 adversarial_key: str = DEFAULT_ADVERSARIAL_KEY
                 ) -> dict[str, str]:
  """Writes `pareto.csv` and `pareto.png`; returns their paths."""
  all_rows = rows(results, adversarial_key)
  front = pareto_rows(results, adversarial_key)
  csv_path = os.path.join(workdir, 'pareto.csv')
  png_path = os.path.join(workdir, 'pareto.png')
  fileio.write_csv(csv_path, front)
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, panels = plt.subplots(1, 2, figsize=(10, 4))
  front_ids = {r['trial'] for r in front}
  label = adversarial_key.replace('val_', '').replace('_', ' ') + ' (val)'
  for ax, (xk, xl) in zip(panels, ((adversarial_key, label),
                                   ('flash_bytes', 'flash (kB)'))):
    scale = 1e-3 if xk == 'flash_bytes' else 1.0
    for r in all_rows:
      on = r['trial'] in front_ids
      ax.scatter(float(r[xk]) * scale, float(r['val_accuracy']),
                 s=50 if on else 20, c='tab:red' if on else 'tab:gray',
                 edgecolors='k' if on else 'none', zorder=3 if on else 2)
      if on:
        ax.annotate(str(r['trial']), (float(r[xk]) * scale,
                                      float(r['val_accuracy'])),
                    fontsize=7, xytext=(3, 3), textcoords='offset points')
    ax.set_xlabel(xl)
    ax.set_ylabel('accuracy (val)')
    ax.grid(alpha=0.3)
  fig.suptitle(title or f'{len(front)} Pareto-optimal of {len(all_rows)} '
               'trained candidates (red)')
  fig.tight_layout()
  fig.savefig(png_path, dpi=120)
  plt.close(fig)
  return {'csv': csv_path, 'png': png_path}
