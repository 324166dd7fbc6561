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
import time
from typing import Any, Callable

import ml_collections

from tinyrobust import config_io
from tinyrobust import hardware
from tinyrobust import io
from tinyrobust.nas import candidate
from tinyrobust.nas import costs
from tinyrobust.nas import search
from tinyrobust.nas import spaces
from tinyrobust.studies.search import definitions
from tinyrobust.studies.search import report


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
  return search.run_search(cfg, workdir)


def _default_handcrafted(cfg, model_kwargs, workdir):
  """Trains the hand-set model with the search's final budget."""
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
  for k in definitions.METRICS[:-1]:
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
  return report.write(config, workdir, rows)


def check_search_study_config(config) -> None:
  """Bad models, boards, arms or seeds: errors before any search."""
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
  bad = [a for a in s.arms if a not in definitions.ARMS]
  if bad or not s.arms:
    raise ValueError(f'search_study.arms {list(s.arms)}: valid arms are '
                     f'{definitions.ARMS}.')
  n = s.n_seeds
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise ValueError(f'search_study.n_seeds must be an integer >= 1, got '
                     f'{n!r}.')
