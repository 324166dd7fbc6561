"""The study's tables and findings, computed from the stored results.

Pure functions over what the model jobs wrote (`final_metrics.json`,
`attack_results.json`, `attack_examples.npz`, `profile.json`):

* `table1`: test accuracy, parameters, flash (int8 flatbuffer), SRAM (TFLM
  arena), input kind, NAS, transfer learning: one row per model.
* `curves`: consistency and robust accuracy per model, attack and eps.
* `gap`: per task, attack and metric, the mean over the non-zero eps of
  (mean over large models - mean over tiny models), with a percentile
  bootstrap interval over test examples (paired across models when they
  share the test set).
* `findings`: whether "TinyML models are less robust than large models"
  holds per task and attack, decided from the gap and its interval.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from tinyrobust import fileio
from tinyrobust.studies.robustness import config as study_config

METRICS = ('consistency', 'robust_accuracy')
# The study's headline: TinyML models were this many points less robust
# (consistency, "adversarial accuracy") than large ones, over its tasks.
STUDY_GAP_POINTS = {'fgsm': (4.4, 11.4), 'pgd': (1.0, 10.9)}


def load_model_results(workdir: str, task: str, label: str) -> dict[str, Any]:
  """Everything a model job stored, as plain data."""
  wd = study_config.model_dir(workdir, task, label)
  ex = np.load(os.path.join(wd, 'attack_examples.npz'))
  return {'final': fileio.read_json(os.path.join(wd, 'final_metrics.json')),
          'attack': fileio.read_json(os.path.join(wd, 'attack_results.json')),
          'profile': fileio.read_json(os.path.join(wd, 'profile.json')),
          'examples': {k: ex[k] for k in ex.files}}


def table1(config, results) -> list[dict[str, Any]]:
  rows = []
  for task, label, entry in study_config.entries(config):
    r = results[(task, label)]
    prof = r['profile']
    int8 = prof.get('int8') or {}
    rows.append({
        'task': task, 'model': label,
        'architecture': study_config.architecture(entry),
        'kind': entry.kind, 'dataset': entry.config.data.name,
        'test_accuracy': r['final']['test_accuracy'],
        'test_examples': r['final']['test_count'],
        'params': prof.get('params'),
        'flash_int8_bytes': int8.get('flash'),
        'sram_tflm_int8_bytes': int8.get('tflm_arena'),
        'fits_int8': ','.join(sorted(
            b for b, v in (prof.get('boards') or {}).items()
            if (v.get('int8') or {}).get('fits'))) or 'none',
        'input': entry.input, 'nas': entry.get('nas', False),
        'transfer_learning': entry.get('transfer', False),
        'trained': (f'elsewhere ({r["final"]["source"]["kind"]})'
                    if r['final'].get('source') else 'here'),
        'sha256': (r['final'].get('source') or {}).get('sha256', ''),
        'note': prof.get('export_error') or int8.get('tflm_error') or '',
    })
  return rows


def curves(config, results) -> list[dict[str, Any]]:
  rows = []
  for task, label, entry in study_config.entries(config):
    att = results[(task, label)]['attack']
    units = att.get('eps_grid_in_units', att['eps_grid'])
    for name, res in att['attacks'].items():
      for p, eps_u in zip(res['per_eps'], units):
        rows.append({'task': task, 'model': label, 'kind': entry.kind,
                     'attack': name, 'eps': eps_u,
                     'eps_units': config.tasks[task].eps_units,
                     'eps_input': p['eps'],
                     'consistency': p['consistency'],
                     'robust_accuracy': p['robust_accuracy'],
                     'denominator': att['denominator']})
  return rows


def _per_example(r, attack: str, metric: str) -> np.ndarray:
  key = 'robust' if metric == 'robust_accuracy' else 'consistent'
  return np.asarray(r['examples'][f'{attack}__{key}'], np.float64)  # [E, N]


def _bootstrap_means(mats: list[np.ndarray], n_boot: int,
                     rng: np.random.Generator) -> list[np.ndarray]:
  """Per matrix `[E, N]`, `[n_boot, E]` means over resampled examples;
  one resampling shared by all matrices of the same N (paired)."""
  weights = {}
  out = []
  for m in mats:
    n = m.shape[1]
    if n not in weights:
      weights[n] = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot) / n
    out.append(weights[n] @ m.T)
  return out


def gap(config, results, *, n_boot: int = 1000, seed: int = 0
        ) -> list[dict[str, Any]]:
  """Large-minus-tiny robustness gap per task, attack and metric."""
  rows = []
  rng = np.random.default_rng(seed)
  for task, tcfg in config.tasks.items():
    labels = {k: [l for l, e in tcfg.models.items() if e.kind == k]
              for k in study_config.KINDS}
    first = results[(task, labels['tiny'][0])]['attack']
    nonzero = np.asarray(first['eps_grid']) > 0
    for attack in first['attacks']:
      for metric in METRICS:
        mats = {k: [_per_example(results[(task, l)], attack, metric)[nonzero]
                    for l in labels[k]] for k in labels}
        point = {k: np.mean([m.mean() for m in mats[k]]) for k in mats}
        boots = _bootstrap_means(mats['tiny'] + mats['large'], n_boot, rng)
        tiny_b = np.mean([b.mean(1) for b in boots[:len(mats['tiny'])]], 0)
        large_b = np.mean([b.mean(1) for b in boots[len(mats['tiny']):]], 0)
        diff = large_b - tiny_b
        lo, hi = np.percentile(diff, [2.5, 97.5])
        rows.append({
            'task': task, 'attack': attack, 'metric': metric,
            'tiny_mean': float(point['tiny']),
            'large_mean': float(point['large']),
            'gap_points': 100 * float(point['large'] - point['tiny']),
            'ci95_low_points': 100 * float(lo),
            'ci95_high_points': 100 * float(hi),
            'eps_values': int(nonzero.sum()), 'bootstrap': n_boot,
            'n_tiny': len(labels['tiny']), 'n_large': len(labels['large'])})
  return rows


def _verdict(row) -> str:
  if row['ci95_low_points'] > 0:
    return 'holds'
  if row['ci95_high_points'] < 0:
    return 'reversed'
  return 'inconclusive'


def clean_gap(t1_rows) -> list[dict[str, Any]]:
  """Per task, mean clean test accuracy of tiny and large models."""
  out = []
  for task in sorted({r['task'] for r in t1_rows}):
    acc = {k: [r['test_accuracy'] for r in t1_rows
               if r['task'] == task and r['kind'] == k]
           for k in study_config.KINDS}
    out.append({'task': task, 'tiny_clean': float(np.mean(acc['tiny'])),
                'large_clean': float(np.mean(acc['large']))})
  return out


def caveats(t1_rows, found) -> list[str]:
  """Computed warnings: consistency rewards a model that is wrong alike on
  x and x_adv, so a much less accurate model can look 'more robust'."""
  out = []
  for c in clean_gap(t1_rows):
    diff = 100 * (c['large_clean'] - c['tiny_clean'])
    reversed_c = [f for f in found if f['task'] == c['task'] and
                  f['metric'] == 'consistency' and f['verdict'] != 'holds']
    if abs(diff) >= 10:
      out.append(
          f'{c["task"]}: the clean accuracies differ by {diff:+.1f} points '
          f'(tiny {c["tiny_clean"]:.3f}, large {c["large_clean"]:.3f}); '
          'consistency does not use the label, so the less accurate group '
          'can look more consistent' + (' (as here: read robust accuracy '
                                        'for this task)' if reversed_c
                                        else '') + '.')
  return out


def findings(gap_rows) -> list[dict[str, Any]]:
  """One finding per gap row, decided from the numbers alone.

  'holds': large models are more robust (the 95% interval of the gap is
  above 0); 'reversed': TinyML models are more robust (interval below 0);
  'inconclusive': the interval contains 0. For consistency (the study's
  "adversarial accuracy"), also whether the gap falls in the study's range.
  """
  out = []
  for r in gap_rows:
    f = {'task': r['task'], 'attack': r['attack'], 'metric': r['metric'],
         'verdict': _verdict(r), 'gap_points': r['gap_points'],
         'ci95': [r['ci95_low_points'], r['ci95_high_points']]}
    rng = STUDY_GAP_POINTS.get(r['attack'])
    if rng and r['metric'] == 'consistency':
      f['study_range_points'] = list(rng)
      f['within_study_range'] = bool(rng[0] <= r['gap_points'] <= rng[1])
    verb = {'holds': 'are less robust than', 'reversed': 'are MORE robust '
            'than', 'inconclusive': 'are not distinguishably less robust '
            'than'}[f['verdict']]
    f['text'] = (
        f'{r["task"]}, {r["attack"].upper()}, {r["metric"].replace("_", " ")}'
        f': TinyML models {verb} large models (large - tiny = '
        f'{r["gap_points"]:+.1f} points, 95% CI [{r["ci95_low_points"]:+.1f},'
        f' {r["ci95_high_points"]:+.1f}])'
        + (f'; the study reported {rng[0]}-{rng[1]} points, '
           + ('within' if f['within_study_range'] else 'outside')
           + ' that range' if 'within_study_range' in f else '') + '.')
    out.append(f)
  return out
