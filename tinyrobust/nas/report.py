"""The end of a search: best trial, final retraining, Pareto set, summary.

`finalize` picks the best finished trial at the central weights, retrains
it with the full budget when the evaluator can (`evaluate_fn.final`, cached
in `final.json`), writes `pareto.csv` / `pareto.png` and `summary.json`
(with the adversarial term's measured time share) and prints one line per
result. `describe` is the one-line log of a trial.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from tinyrobust import fileio
from tinyrobust.nas import journal as journal_lib
from tinyrobust.nas import objective as objective_lib
from tinyrobust.nas import pareto as pareto_lib


def log(msg: str) -> None:
  print(f'[nas] {msg}', flush=True)


def adversarial_key(config) -> str:
  """The validation metric the objective's adversarial term reads."""
  return f'val_{config.search.adversarial_attack}_consistency'


def describe(rec: dict[str, Any], done: int, total: int) -> str:
  """One log line for a finished trial."""
  m, t = rec.get('metrics') or {}, rec.get('timings') or {}
  parts = [f'trial {rec["trial"]} ({done}/{total}) {rec["status"]}',
           f'params={rec["params"]}']
  if rec['status'] == 'ok':
    parts.append(f'score={rec["score"]:.4f}')
    parts += [f'{k}={m[k]:.4g}' for k in sorted(m)
              if k == 'val_accuracy' or k.endswith('_consistency')
              or k in ('flash_bytes', 'sram_bytes')]
    if 'adversarial_share' in t:
      parts.append(f'adv_share={t["adversarial_share"]:.3f}')
  elif rec['status'] == 'infeasible':
    parts.append(f'flash={m.get("flash_bytes")} sram={m.get("sram_bytes")}')
  else:
    parts.append(f'error={rec.get("error")}')
  parts.append(f'{t.get("total_s", 0):.1f}s')
  return ' '.join(parts)


def stats(values) -> dict[str, float] | None:
  """mean / median / min / max / n of the finite values (None if none)."""
  v = np.asarray([x for x in values if x is not None and math.isfinite(x)],
                 np.float64)
  if not len(v):
    return None
  return {'mean': float(v.mean()), 'median': float(np.median(v)),
          'min': float(v.min()), 'max': float(v.max()), 'n': int(len(v))}


def score(result: dict[str, Any], weights) -> float:
  """The scalarized objective of a finished trial (inf unless ok)."""
  if result['status'] != 'ok' or not result.get('terms'):
    return math.inf
  s = objective_lib.scalarize(result['terms'], weights)
  return s if math.isfinite(s) else math.inf


def _final(config, workdir, best, evaluate_fn):
  """The best trial retrained with the full budget (cached in final.json)."""
  if best is None or not config.search.final_retrain or not hasattr(
      evaluate_fn, 'final'):
    return None
  final_path = os.path.join(workdir, 'final.json')
  if os.path.exists(final_path) and fileio.read_json(final_path).get(
      'trial') == best['trial']:
    return fileio.read_json(final_path)
  log(f'retraining best trial {best["trial"]} with the full budget')
  final = {'trial': best['trial'],
           **evaluate_fn.final(best['params'], os.path.join(workdir,
                                                             'final'))}
  fileio.write_json(final_path, final)
  return final


def finalize(config, workdir: str, results: list[dict[str, Any]],
             weights: dict[str, float], evaluate_fn, *, search_s: float,
             budget: dict[str, Any] | None = None) -> dict[str, Any]:
  """Best trial, optional full retraining, Pareto CSV/plot, summary.json."""
  s = config.search
  results = sorted(results, key=lambda r: r['trial'])
  ok = [r for r in results if r['status'] == 'ok' and
        math.isfinite(score(r, weights))]
  best = min(ok, key=lambda r: score(r, weights)) if ok else None
  final = _final(config, workdir, best, evaluate_fn)
  adv_key = adversarial_key(config)
  paths = pareto_lib.write_pareto(results, workdir, title=(
      f'{config.model.name} on {config.data.name}, board {s.board}, '
      f'l5={weights["adversarial"]}'), adversarial_key=adv_key)
  front = pareto_lib.pareto_rows(results, adv_key)
  timings = [r.get('timings') or {} for r in ok]
  summary = {
      'workdir': workdir,
      'model': config.model.name, 'dataset': config.data.name,
      'board': budget or {'name': s.board},
      'weights': weights, 'sram_gate': s.sram_gate,
      'flash_proxy': s.flash_proxy, 'precision': s.precision,
      'eps': (float(config.attack.eps_grid[0])
              if len(config.attack.eps_grid) == 1 else None),
      'attacks': list(config.attack.attacks),
      'adversarial_attack': s.adversarial_attack,
      'trials': len(results),
      'status_counts': {st: sum(r['status'] == st for r in results)
                        for st in journal_lib.STATUSES},
      'best_trial': None if best is None else {
          k: best.get(k) for k in ('trial', 'params', 'score', 'terms',
                                   'metrics', 'timings')},
      'final': final,
      'pareto': {'size': len(front), 'trials': [r['trial'] for r in front],
                 **paths},
      'adversarial_share': stats([t.get('adversarial_share')
                                  for t in timings]),
      'attack_s': {a: stats([t.get(f'{a}_s') for t in timings])
                   for a in config.attack.attacks},
      'train_s': stats([t.get('train_s') for t in timings]),
      'search_s_this_run': search_s,
      'versions': journal_lib.package_versions(),
  }
  fileio.write_json(os.path.join(workdir, 'summary.json'), summary)
  _print_best(best, final, adv_key)
  return summary


def _print_best(best, final, adv_key: str) -> None:
  if best is not None:
    m = best.get('metrics') or {}
    log(f'best trial {best["trial"]}: score {best["score"]:.4f} '
        f'params {best["params"]} ' + ' '.join(
            f'{k}={m[k]:.4g}' for k in ('val_accuracy', adv_key,
                                        'flash_bytes', 'sram_bytes')
            if k in m))
  if final:
    log('final (test): ' + ' '.join(
        f'{k}={v:.4g}' for k, v in sorted(final.items())
        if (k.startswith('test_') or k in ('flash_bytes', 'sram_bytes'))
        and isinstance(v, (int, float)) and not isinstance(v, bool)))
