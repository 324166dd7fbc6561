"""The search study (the study's Table 2): does the adversarial term pay?

For every model family and board, three arms over `n_seeds` seeds:

* `handcrafted`: the zoo model with its hand-set options (the training
  config's), trained and tested exactly like a search's final model (same
  epochs, attacks and cost path: `CandidateEvaluator.handcrafted`);
* `noadv`: the robust search with the adversarial weight l5 = 0;
* `adv`: the search with the study's adversarial term.

Each (model, board, arm, seed) is one run in `runs/<model>/<board>/<arm>/
seed<k>/` with its own `summary.json`: a finished run is read back, never
recomputed, and a killed run resumes from its journal (`run_search`). The
searches' trials go through the configured executor (sequential, process
pool, Ray).

Outputs: `table2.csv`/`.md` (mean and spread over seeds of test accuracy,
FGSM/PGD consistency and robust accuracy at the study's eps, flash, SRAM,
FLOPs and search wall time), `pairs.csv` (adv minus noadv per model,
board and seed), `figures/fronts.png` (final models per board), `report.md`
with the protocol, the adversarial term's time share, trials per hour and
the verdict on the study's "+9 points" computed from the paired differences
with a bootstrap interval, and `summary.json`.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import ml_collections
import numpy as np

from tinyrobust import config_io
from tinyrobust import io

ARMS = ('handcrafted', 'noadv', 'adv')
METRICS = ('test_accuracy', 'test_fgsm_consistency',
           'test_fgsm_robust_accuracy', 'test_pgd_consistency',
           'test_pgd_robust_accuracy', 'flash_bytes', 'sram_bytes', 'flops',
           'search_s')
CLAIM_POINTS = 9.0  # the study: +9 points of adversarial accuracy


def run_config(config, model: str, board: str, arm: str, seed: int
               ) -> ml_collections.ConfigDict:
  """The search config of one run (the model's search config, this board,
  seed and arm)."""
  c = ml_collections.ConfigDict(config.searches[model].to_dict())
  c.seed = int(seed)
  c.data.options.seed = int(seed)
  c.search.board = board
  if arm == 'noadv':
    c.search.adversarial_weight = 0.0
  return c


def _default_search(cfg, workdir):
  from tinyrobust.nas import search  # pylint: disable=g-import-not-at-top
  return search.run_search(cfg, workdir)


def _default_handcrafted(cfg, model_kwargs, workdir):
  """Trains the hand-set model with the search's final budget."""
  import time  # pylint: disable=g-import-not-at-top
  from tinyrobust.nas import candidate  # pylint: disable=g-import-not-at-top
  from tinyrobust.nas import costs  # pylint: disable=g-import-not-at-top
  from tinyrobust.nas import search  # pylint: disable=g-import-not-at-top
  from tinyrobust.nas import spaces  # pylint: disable=g-import-not-at-top
  cfg = search.resolve_config(cfg)
  s = cfg.search
  space = spaces.get_space(s.space or cfg.model.name,
                           **config_io.to_dict(s.space_options))
  budget = costs.board_budget(s.board, flash_max_bytes=s.flash_max_bytes,
                              sram_max_bytes=s.sram_max_bytes)
  ev = candidate.CandidateEvaluator(cfg, workdir, space, budget)
  t0 = time.perf_counter()
  final = ev.handcrafted(model_kwargs, os.path.join(workdir, 'final'))
  return {'final': final, 'trials': 0,
          'search_s_this_run': time.perf_counter() - t0}


def _row(model, board, arm, seed, summary) -> dict[str, Any]:
  final = summary.get('final') or {}
  row = {'model': model, 'board': board, 'arm': arm, 'seed': seed}
  for k in METRICS[:-1]:
    v = final.get(k)
    row[k] = float(v) if v is not None else float('nan')
  row['search_s'] = float(summary.get('search_s_this_run') or 0.0)
  row['trials'] = int(summary.get('trials') or 0)
  row['epochs'] = final.get('epochs')
  share = (summary.get('adversarial_share') or {}).get('mean')
  row['adversarial_share'] = float('nan') if share is None else float(share)
  return row


def run_search_study(config, workdir: str, *,
                     search_fn: Callable | None = None,
                     handcrafted_fn: Callable | None = None
                     ) -> dict[str, Any]:
  """Runs (or resumes) every run, then writes the tables and report."""
  s = config.search_study
  check_search_study_config(config)
  search_fn = search_fn or _default_search
  handcrafted_fn = handcrafted_fn or _default_handcrafted
  os.makedirs(workdir, exist_ok=True)
  config_io.pin_config(config, os.path.join(workdir, 'study_config.json'),
                       mutable=('search_study.bootstrap',),
                       what='search study')
  rows = []
  for model in s.models:
    for board in s.boards:
      for seed in range(int(s.n_seeds)):
        for arm in s.arms:
          wd = os.path.join(workdir, 'runs', model, board, arm, f'seed{seed}')
          path = os.path.join(wd, 'study_run.json')
          if os.path.exists(path):
            summary = io.read_json(path)
          else:
            cfg = run_config(config, model, board, arm, seed)
            summary = (handcrafted_fn(cfg, config_io.to_dict(
                config.handcrafted[model]), wd) if arm == 'handcrafted'
                       else search_fn(cfg, wd))
            summary = io.to_jsonable(summary)
            io.write_json(path, summary)
          rows.append(_row(model, board, arm, seed, summary))
  from tinyrobust.nas import search_study_report  # pylint: disable=g-import-not-at-top
  return search_study_report.write(config, workdir, rows)


def check_search_study_config(config) -> None:
  """Bad models, boards, arms or seeds: errors before any search."""
  from tinyrobust import hardware  # pylint: disable=g-import-not-at-top
  s = config.get('search_study')
  if s is None:
    raise ValueError('A search study config needs a `search_study` section.')
  for m in s.models:
    if m not in config.searches or m not in config.handcrafted:
      raise ValueError(f'search_study.models names {m!r}, which has no '
                       f'entry in `searches` and `handcrafted` (have '
                       f'{sorted(config.searches)}).')
  for b in s.boards:
    hardware.get_board(b)
  bad = [a for a in s.arms if a not in ARMS]
  if bad or not s.arms:
    raise ValueError(f'search_study.arms {list(s.arms)}: valid arms are '
                     f'{ARMS}.')
  n = s.n_seeds
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise ValueError(f'search_study.n_seeds must be an integer >= 1, got '
                     f'{n!r}.')


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
