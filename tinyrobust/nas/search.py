"""`run_search(config, workdir)`: the robust, platform-aware search loop.

    suggest (GP designer, random scalarization) -> journal 'suggest'
      -> executor runs evaluate_fn(params, trial) -> journal 'result'
      -> designer.update -> ... until search.num_trials results exist
    -> best candidate (objective at the central weights) retrained with the
       full budget and tested clean / FGSM / PGD
    -> pareto.csv + pareto.png + summary.json

Resume: the workdir's `trials.jsonl` is replayed first. Finished trials
(ok / infeasible / failed) go into the designer and are never run again;
suggested-but-unfinished ones are re-submitted (as a batch of their own,
before any new suggestion), so a killed and restarted search proposes exactly
what an uninterrupted one would have. The settings that define the search
(data, model, objective, space, board) are stored in `search_config.json`;
restarting with different ones is refused, while `num_trials`, `batch_size`
and the executor may change (to extend a finished search or move it to a
cluster).

`evaluate_fn(params, trial) -> outcome` is injectable; the default is
`candidate.CandidateEvaluator`. An outcome has `status` ('ok',
'infeasible', 'failed'), `terms` (the five objective terms of
`objective.terms`), `metrics` and `timings`.

Config fields (`config.search`, defaults in `default_search_config`):
  space, space_options, board, flash_max_bytes, sram_max_bytes, sram_gate,
  flash_proxy, precision, objective (preset), adversarial_weight (overrides l5),
  weights (overrides single terms), weight_spread, weight_ranges, flops_target,
  designer ('gp' | 'random'), kappa, n_initial_points, n_acq_points,
  penalty_margin, liar, num_trials, batch_size, executor ('sequential' |
  'process' | 'ray'), num_workers, ray_address, cpus_per_trial,
  trial_epochs, eps, pgd_steps, attack_loss, attack_batch_size,
  max_attack_examples, final_retrain, seed.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Callable

import ml_collections
import numpy as np

from tinyrobust import io
from tinyrobust.nas import costs as costs_lib
from tinyrobust.nas import designer as designer_lib
from tinyrobust.nas import executors as executors_lib
from tinyrobust.nas import journal as journal_lib
from tinyrobust.nas import objective as objective_lib
from tinyrobust.nas import pareto as pareto_lib
from tinyrobust.nas import spaces as spaces_lib

# May change between restarts of the same search.
_MUTABLE = ('num_trials', 'batch_size', 'executor', 'num_workers',
            'ray_address', 'cpus_per_trial', 'final_retrain')


def default_search_config() -> ml_collections.ConfigDict:
  """Defaults of `config.search` (a config's own fields override them)."""
  s = ml_collections.ConfigDict()
  s.space = ''
  s.space_options = ml_collections.ConfigDict()
  s.board = 'stm32f446re'
  s.flash_max_bytes = ml_collections.config_dict.placeholder(float)
  s.sram_max_bytes = ml_collections.config_dict.placeholder(float)
  s.sram_gate = 'tflm'
  s.flash_proxy = 'tflite'
  s.precision = 'int8'
  s.objective = 'study'
  s.adversarial_weight = ml_collections.config_dict.placeholder(float)
  s.weights = ml_collections.ConfigDict()
  s.weight_spread = 0.5
  s.weight_ranges = ml_collections.ConfigDict()
  s.flops_target = objective_lib.STUDY_FLOPS_TARGET
  s.designer = 'gp'
  s.kappa = 1.96
  s.n_initial_points = 5
  s.n_acq_points = 2000
  s.penalty_margin = 1.0
  s.liar = 'cl_max'
  s.num_trials = 55
  s.batch_size = 1
  s.executor = 'sequential'
  s.num_workers = 1
  s.ray_address = ml_collections.config_dict.placeholder(str)
  s.cpus_per_trial = 1.0
  s.trial_epochs = 20
  s.eps = 0.4
  s.pgd_steps = 10
  s.attack_loss = 'ce'
  s.attack_batch_size = 256
  s.max_attack_examples = ml_collections.config_dict.placeholder(int)
  s.final_retrain = True
  s.seed = 0
  return s


VARIANTS = ('quick', 'noadv')


def parse_variants(arg: str | None) -> set[str]:
  """Comma-separated config variants, e.g. 'quick,noadv' -> {'quick',
  'noadv'} (the `get_config(arg)` argument of the search configs)."""
  tokens = {t.strip() for t in (arg or '').split(',') if t.strip()}
  bad = sorted(tokens - set(VARIANTS))
  if bad:
    raise ValueError(f'Unknown config variant(s) {bad}. Valid: {VARIANTS} '
                     "(comma-separated, e.g. 'quick,noadv').")
  return tokens


def resolve_config(config: ml_collections.ConfigDict
                   ) -> ml_collections.ConfigDict:
  """A copy of `config` whose `search` section has every default filled."""
  d = config.to_dict()
  s = default_search_config().to_dict()
  s.update(d.get('search') or {})
  d['search'] = s
  return ml_collections.ConfigDict(d)


def central_weights(s) -> dict[str, float]:
  """Objective weights: the preset, then `weights`, then
  `adversarial_weight`."""
  w = objective_lib.preset(s.objective)
  w.update({k: float(v) for k, v in _as_dict(s.weights).items()})
  if s.get('adversarial_weight') is not None:
    w['adversarial'] = float(s.adversarial_weight)
  return objective_lib.check_weights(w)


def check_search_config(s) -> None:
  """Fails fast on bad `config.search` values (before any work)."""
  costs_lib.check_options(sram_gate=s.sram_gate, flash_proxy=s.flash_proxy,
                          precision=s.precision)
  if s.designer not in designer_lib.DESIGNERS:
    raise ValueError(f'Unknown search.designer {s.designer!r}. Valid: '
                     f'{designer_lib.DESIGNERS}.')
  if s.executor not in executors_lib.EXECUTORS:
    raise ValueError(f'Unknown search.executor {s.executor!r}. Valid: '
                     f'{executors_lib.EXECUTORS}.')
  for name in ('num_trials', 'batch_size', 'num_workers', 'trial_epochs'):
    if int(s[name]) < 1:
      raise ValueError(f'search.{name} must be >= 1, got {s[name]}.')
  if int(s.pgd_steps) < 0:
    raise ValueError(f'search.pgd_steps must be >= 0, got {s.pgd_steps}.')
  if not float(s.eps) >= 0:
    raise ValueError(f'search.eps must be >= 0, got {s.eps}.')
  central_weights(s)
  objective_lib.weight_ranges(central_weights(s), float(s.weight_spread),
                              _as_dict(s.weight_ranges))


def _as_dict(cfg) -> dict[str, Any]:
  if cfg is None:
    return {}
  return cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)


def _identity(config_dict: dict[str, Any]) -> dict[str, Any]:
  d = json.loads(json.dumps(io.to_jsonable(config_dict), sort_keys=True))
  d['search'] = {k: v for k, v in d['search'].items() if k not in _MUTABLE}
  return d


def _check_resume(config, workdir: str) -> None:
  path = os.path.join(workdir, 'search_config.json')
  new = _identity(config.to_dict())
  if os.path.exists(path):
    old = _identity(io.read_json(path))
    if old != new:
      keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
      sub = sorted(k for k in set(old.get('search', {})) |
                   set(new.get('search', {}))
                   if old.get('search', {}).get(k) !=
                   new.get('search', {}).get(k))
      raise ValueError(
          f'Workdir {workdir!r} holds a search with different settings '
          f'(differs at: {", ".join(keys)}{"; search." if sub else ""}'
          f'{", search.".join(sub)}). Use a new --workdir, or restore them '
          f'(only search.{", search.".join(_MUTABLE)} may change).')
  io.write_json(path, config.to_dict())


def _score(result: dict[str, Any], weights) -> float:
  if result['status'] != 'ok' or not result.get('terms'):
    return math.inf
  s = objective_lib.scalarize(result['terms'], weights)
  return s if math.isfinite(s) else math.inf


def _log(msg: str) -> None:
  print(f'[nas] {msg}', flush=True)


def run_search(config: ml_collections.ConfigDict, workdir: str, *,
               evaluate_fn: Callable | None = None,
               space: spaces_lib.SearchSpace | None = None,
               executor=None) -> dict[str, Any]:
  """Runs (or resumes) a search in `workdir`; returns the summary dict.

  Args:
    config: experiment config (seed, data, model, train, search); see the
      module docstring for `search` fields. `train.epochs` is the full budget
      of the final retraining, `search.trial_epochs` each candidate's.
    workdir: output directory (trials.jsonl, trials/, final/, pareto.csv,
      pareto.png, summary.json).
    evaluate_fn: `fn(params, trial) -> outcome`; default
      `CandidateEvaluator` (costs -> gate -> train -> FGSM/PGD).
    space: a `SearchSpace`; default `spaces.get_space(search.space or
      model.name, **search.space_options)`.
    executor: an executor object; default built from `search.executor`.

  Returns:
    The summary written to `summary.json`.
  """
  config = resolve_config(config)
  s = config.search
  check_search_config(s)
  if space is None:
    space = spaces_lib.get_space(s.space or config.model.name,
                                 **_as_dict(s.space_options))
  weights = central_weights(s)
  ranges = objective_lib.weight_ranges(weights, float(s.weight_spread),
                                       _as_dict(s.weight_ranges))
  budget = None
  if evaluate_fn is None:
    budget = costs_lib.board_budget(s.board,
                                    flash_max_bytes=s.flash_max_bytes,
                                    sram_max_bytes=s.sram_max_bytes)
    from tinyrobust.nas import candidate  # pylint: disable=g-import-not-at-top
    evaluate_fn = candidate.CandidateEvaluator(config, workdir, space, budget)
  os.makedirs(workdir, exist_ok=True)
  _check_resume(config, workdir)

  journal = journal_lib.Journal(workdir)
  replay = journal.replay()
  designer = designer_lib.make_designer(
      s.designer, space, weight_ranges=ranges, kappa=float(s.kappa),
      n_initial_points=int(s.n_initial_points), seed=int(s.seed),
      n_acq_points=int(s.n_acq_points),
      penalty_margin=float(s.penalty_margin), liar=s.liar)
  designer.update(replay.results)
  pending = list(replay.pending)
  for p in pending:
    designer.add_pending(p['trial'], p['params'])
  results = list(replay.results)
  if results or pending:
    _log(f'resumed {workdir}: {len(results)} finished trial(s) replayed, '
         f'{len(pending)} unfinished re-submitted')

  own_executor = executor is None
  if own_executor:
    executor = executors_lib.make_executor(
        s.executor, num_workers=int(s.num_workers), address=s.ray_address,
        cpus_per_trial=float(s.cpus_per_trial))
  t_start = time.perf_counter()
  try:
    batch_no = 1 + max([int(r.get('batch', 0)) for r in
                        replay.results + replay.pending] + [-1])
    while len(results) < int(s.num_trials):
      room = min(int(s.batch_size), int(s.num_trials) - len(results))
      jobs = []
      while pending and len(jobs) < room:
        p = pending.pop(0)
        jobs.append({'trial': int(p['trial']), 'params': p['params'],
                     'weights': p.get('weights')})
      if not jobs:  # a resumed batch is finished on its own, as it began
        for params, tid, w in zip(designer.suggest(room - len(jobs)),
                                  designer.last_ids, designer.last_weights):
          journal.suggest(tid, params, w, batch_no)
          jobs.append({'trial': tid, 'params': params, 'weights': w})
      for job, outcome in executor.run(evaluate_fn, jobs):
        rec = {'trial': job['trial'], 'params': job['params'],
               'weights': job.get('weights'), 'batch': batch_no,
               'seed': int(config.seed), **outcome}
        rec['score'] = _score(rec, weights)
        rec = journal.result(rec)
        designer.update([rec])
        results.append(rec)
        _log(_describe(rec, len(results), int(s.num_trials)))
      batch_no += 1
  finally:
    if own_executor:
      executor.close()
  search_s = time.perf_counter() - t_start
  return finalize(config, workdir, results, weights, evaluate_fn,
                  search_s=search_s, budget=budget)


def _describe(rec, done, total) -> str:
  m, t = rec.get('metrics') or {}, rec.get('timings') or {}
  parts = [f'trial {rec["trial"]} ({done}/{total}) {rec["status"]}',
           f'params={rec["params"]}']
  if rec['status'] == 'ok':
    parts.append(f'score={rec["score"]:.4f}')
    for k in ('val_accuracy', 'val_fgsm_consistency', 'flash_bytes',
              'sram_bytes'):
      if k in m:
        parts.append(f'{k}={m[k]:.4g}')
    if 'adversarial_share' in t:
      parts.append(f'adv_share={t["adversarial_share"]:.3f}')
  elif rec['status'] == 'infeasible':
    parts.append(f'flash={m.get("flash_bytes")} sram={m.get("sram_bytes")}')
  else:
    parts.append(f'error={rec.get("error")}')
  parts.append(f'{t.get("total_s", 0):.1f}s')
  return ' '.join(parts)


def _stats(values) -> dict[str, float] | None:
  v = np.asarray([x for x in values if x is not None and math.isfinite(x)],
                 np.float64)
  if not len(v):
    return None
  return {'mean': float(v.mean()), 'median': float(np.median(v)),
          'min': float(v.min()), 'max': float(v.max()), 'n': int(len(v))}


def finalize(config, workdir: str, results: list[dict[str, Any]],
             weights: dict[str, float], evaluate_fn, *, search_s: float,
             budget: dict[str, Any] | None = None) -> dict[str, Any]:
  """Best trial, optional full retraining, Pareto CSV/plot, summary.json."""
  s = config.search
  results = sorted(results, key=lambda r: r['trial'])
  counts = {st: sum(r['status'] == st for r in results)
            for st in journal_lib.STATUSES}
  ok = [r for r in results if r['status'] == 'ok' and
        math.isfinite(_score(r, weights))]
  best = min(ok, key=lambda r: _score(r, weights)) if ok else None
  final = None
  if best is not None and s.final_retrain and hasattr(evaluate_fn, 'final'):
    final_path = os.path.join(workdir, 'final.json')
    if os.path.exists(final_path) and io.read_json(final_path).get(
        'trial') == best['trial']:
      final = io.read_json(final_path)
    else:
      _log(f'retraining best trial {best["trial"]} with the full budget')
      final = {'trial': best['trial'],
               **evaluate_fn.final(best['params'],
                                   os.path.join(workdir, 'final'))}
      io.write_json(final_path, final)
  paths = pareto_lib.write_pareto(results, workdir, title=(
      f'{config.model.name} on {config.data.name}, board {s.board}, '
      f'l5={weights["adversarial"]}'))
  front = pareto_lib.pareto_rows(results)
  timings = [r.get('timings') or {} for r in ok]
  summary = {
      'workdir': workdir,
      'model': config.model.name, 'dataset': config.data.name,
      'board': budget or {'name': s.board},
      'weights': weights, 'sram_gate': s.sram_gate,
      'flash_proxy': s.flash_proxy, 'precision': s.precision,
      'eps': float(s.eps), 'trials': len(results), 'status_counts': counts,
      'best_trial': None if best is None else {
          k: best.get(k) for k in ('trial', 'params', 'score', 'terms',
                                   'metrics', 'timings')},
      'final': final,
      'pareto': {'size': len(front), 'trials': [r['trial'] for r in front],
                 **paths},
      'adversarial_share': _stats([t.get('adversarial_share')
                                   for t in timings]),
      'fgsm_s': _stats([t.get('fgsm_s') for t in timings]),
      'train_s': _stats([t.get('train_s') for t in timings]),
      'search_s_this_run': search_s,
      'versions': journal_lib.package_versions(),
  }
  io.write_json(os.path.join(workdir, 'summary.json'), summary)
  if best is not None:
    m = best.get('metrics') or {}
    _log(f'best trial {best["trial"]}: score {best["score"]:.4f} '
         f'params {best["params"]} ' + ' '.join(
             f'{k}={m[k]:.4g}' for k in ('val_accuracy', 'val_fgsm_consistency',
                                         'flash_bytes', 'sram_bytes')
             if k in m))
  if final:
    _log('final (test): ' + ' '.join(
        f'{k}={final[k]:.4g}' for k in (
            'test_accuracy', 'test_fgsm_consistency',
            'test_fgsm_robust_accuracy', 'test_pgd_consistency',
            'test_pgd_robust_accuracy', 'flash_bytes', 'sram_bytes')
        if isinstance(final.get(k), (int, float))))
  return summary
