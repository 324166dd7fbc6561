"""The search study (the study's Table 2): does the adversarial term pay?

For every model family and board, four arms over `n_seeds` seeds:

* `handcrafted`: the zoo model with its hand-set options (the training
  config's), trained and tested exactly like a search's final model (same
  epochs, attacks and cost path: `CandidateEvaluator.handcrafted`);
* `noadv`: the robust search with the adversarial weight l5 = 0;
* `adv`: the search with the study's adversarial term;
* `advtrain`: the hand-set model adversarially trained
  (`search_study.adv_train`: a `train.adversarial` section, default PGD-AT
  at the search's attack eps) with the same epochs as `handcrafted`.

Each run's cost is its wall time and its gradient evaluations
(`tinyrobust.grad_evals`: the training steps of every trained trial and of
the final model, and the adversarial term's attacks on every trained
trial at their full budget; the final test attacks, the same for every arm,
are not counted).

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

from tinyrobust import adversarial
from tinyrobust import config_io
from tinyrobust import grad_evals
from tinyrobust import hardware
from tinyrobust import fileio
from tinyrobust import qat
from tinyrobust.attacks import config as attack_config_lib
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
  if arm == 'advtrain':
    c.train.adversarial = adv_train_section(config, c)
    k = config.search_study.get('adv_train_qat_epochs', 0)
    if k:  # int8-aware: the deployed int8 model is the defended one
      c.train.qat_epochs = k
  return c


def adv_train_section(config, run_cfg) -> ml_collections.ConfigDict:
  """The `advtrain` arm's `train.adversarial`: `search_study.adv_train`
  (default method 'pgd_at'), eps defaulting to the search's attack eps."""
  d = {'method': 'pgd_at'}
  d.update(config_io.to_dict(config.search_study.get('adv_train')) or {})
  if d.get('eps') is None:
    d['eps'] = float(run_cfg.attack.eps_grid[0])
  return ml_collections.ConfigDict(d)


def run_grad_evals(cfg, arm: str, wd: str, sizes: tuple[int, int] | None
                   = None) -> dict[str, Any] | None:
  """Gradient evaluations of one run from its folders (None without a
  trained final model): training of the trials and final model, and the
  adversarial term's attacks on each trained trial. `sizes`: the (train,
  val) split sizes (default: loaded)."""
  final = os.path.join(wd, 'final')
  if not os.path.exists(os.path.join(final, 'config.json')):
    return None
  rcfg = search.resolve_config(cfg)
  n_train, n_val = sizes or (len(candidate.load_split(rcfg, 'train').y),
                             len(candidate.load_split(rcfg, 'val').y))
  trials = [] if arm in definitions.TRAINED_ARMS else sorted(
      os.path.join(wd, 'trials', t) for t in os.listdir(os.path.join(
          wd, 'trials')) if os.path.exists(os.path.join(
              wd, 'trials', t, 'config.json')))
  train_n = sum(grad_evals.training(d, n_train, n_val)['total']
                for d in trials + [final])
  acfg = attack_config_lib.attack_config(rcfg)
  per = grad_evals.attack_cost(acfg)
  n_att = min(int(acfg.max_examples or n_val), n_val)
  attack_n = None if per is None else len(trials) * n_att * per * len(
      acfg.eps_grid)
  return {'train': train_n, 'attack': attack_n, 'trials': len(trials),
          'total': None if attack_n is None else train_n + attack_n}


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
  for k in definitions.FINAL_METRICS:
    v = final.get(k)
    row[k] = float(v) if v is not None else float('nan')
  row['search_s'] = float(summary.get('search_s_this_run') or 0.0)
  row['trials'] = int(summary.get('trials') or 0)
  total = (summary.get('grad_evals') or {}).get('total')
  row['grad_evals'] = float('nan') if total is None else float(total)
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
          cfg = run_config(config, model, board, arm, seed)
          if os.path.exists(path):
            summary = fileio.read_json(path)
          else:
            summary = (handcrafted_fn(cfg, config_io.to_dict(
                config.handcrafted[model]), wd)
                       if arm in definitions.TRAINED_ARMS
                       else search_fn(cfg, wd))
            summary = fileio.to_jsonable(summary)
          if 'grad_evals' not in summary:  # counted once, from the folders
            summary['grad_evals'] = run_grad_evals(cfg, arm, wd)
            fileio.write_json(path, summary)
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
  if 'advtrain' in s.arms:
    for m in s.models:
      _check_adv_train(config, m, s.boards[0] if s.boards else '')


def _check_adv_train(config, model: str, board: str) -> None:
  """The `advtrain` arm's `search_study.adv_train`, checked as the
  trainer will (ValueError naming the value and what is allowed)."""
  section = config.search_study.get('adv_train')
  if section is not None and not isinstance(section, (
      dict, ml_collections.ConfigDict)):
    raise ValueError(f'search_study.adv_train must be a train.adversarial '
                     f'section (a dict with method, eps, ...), got '
                     f'{section!r}.')
  cfg = run_config(config, model, board, 'advtrain', 0)
  try:
    method = adversarial.settings(cfg)['method']
    adversarial.check_config(cfg)
    qat.qat_epochs(cfg)
  except ValueError as err:
    raise ValueError(f'search_study.adv_train (arm advtrain, model '
                     f'{model}): {err}') from None
  if method == 'none':
    raise ValueError(
        "search_study.adv_train.method='none' leaves the advtrain arm "
        'identical to handcrafted. Valid: '
        f'{", ".join(m for m in adversarial.METHODS if m != "none")}.')
