"""`run_search(config, workdir)`: the robust, platform-aware search loop.

    suggest (GP designer, random scalarization) -> journal 'suggest'
      -> executor runs evaluate_fn(params, trial) -> journal 'result'
      -> designer.update -> ... until search.num_trials results exist
    -> best candidate (objective at the central weights) retrained with the
       full budget and tested under every attack of `config.attack`
    -> pareto.csv + pareto.png + summary.json (`nas/report.py`)

Resume: the workdir's `trials.jsonl` is replayed first. Finished trials
(ok / infeasible / failed because of the candidate) go into the designer and
are never run again; trials that failed because of the environment (missing
data, out of memory, a killed worker: `failures.py`) run again;
suggested-but-unfinished ones are re-submitted (as a batch of their own,
before any new suggestion), so a killed and restarted search proposes exactly
what an uninterrupted one would have. The settings that define the search
(data, model, attack, objective, space, board) are pinned in
`search_config.json`; restarting with different ones is refused, while
`MUTABLE` fields may change (to extend a finished search or move it to a
cluster).

Attacks: the search reads the same `attack` section as every other run
(`tinyrobust.attacks.config.default_attack_config`), with a one-value
`attack.eps_grid`. `search.adversarial_attack` (default 'fgsm', one of
`attack.attacks`) is the objective's adversarial term (its consistency on
the validation split); the other attacks are logged. Metric keys are built
from the attack names (`val_<name>_consistency`, ...).

`evaluate_fn(params, trial) -> outcome` is injectable; the default is
`candidate.CandidateEvaluator`. An outcome has `status` ('ok',
'infeasible', 'failed'), `terms` (the five objective terms of
`objective.terms`), `metrics` and `timings`.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import ml_collections

from tinyrobust import config_io
from tinyrobust.attacks import config as attack_config_lib
from tinyrobust.nas import candidate
from tinyrobust.nas import costs as costs_lib
from tinyrobust.nas import designer as designer_lib
from tinyrobust.nas import executors as executors_lib
from tinyrobust.nas import failures
from tinyrobust.nas import journal as journal_lib
from tinyrobust.nas import objective as objective_lib
from tinyrobust.nas import report as report_lib
from tinyrobust.nas import spaces as spaces_lib

# May change between restarts of the same search.
MUTABLE = tuple(f'search.{k}' for k in (
    'num_trials', 'batch_size', 'executor', 'num_workers', 'ray_address',
    'cpus_per_trial', 'final_retrain')) + ('train.progress_bar',
                                           'train.eval_batch_size')
# Former search fields that now live in the shared `attack` section.
MOVED_TO_ATTACK = {'eps': 'attack.eps_grid (a one-value grid)',
                   'pgd_steps': 'attack.pgd_steps',
                   'attack_loss': 'attack.loss',
                   'attack_batch_size': 'attack.batch_size',
                   'max_attack_examples': 'attack.max_examples'}


def default_search_config() -> ml_collections.ConfigDict:
  """Defaults of `config.search` (a config's own fields override them).

  Fields: the target (`board`, or `flash_max_bytes` / `sram_max_bytes`),
  the cost model (`sram_gate`, `flash_proxy`, `precision`), the objective
  (`objective` preset, `adversarial_weight` overriding l5, `weights`
  overriding single terms, `weight_spread` / `weight_ranges` for the random
  scalarization, `flops_target`, `adversarial_attack`), the attack stage
  (`precompile_attacks`: compile a candidate's validation attacks in a
  thread while it trains; their trial time is then the wait after training
  plus the run; the trials skip the sanity checks, the final tests run
  them), the designer
  (`designer`, `kappa`, `n_initial_points`, `n_acq_points`,
  `penalty_margin`, `liar`), the budget (`num_trials`, `trial_epochs`,
  `final_retrain`), the execution (`batch_size` trials per round,
  `executor`, `num_workers`, `ray_address`, `cpus_per_trial`) and `seed`.
  """
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
  s.adversarial_attack = 'fgsm'
  s.precompile_attacks = True
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
  s.final_retrain = True
  s.seed = 0
  return s


def resolve_config(config: ml_collections.ConfigDict
                   ) -> ml_collections.ConfigDict:
  """A copy of `config` whose `search` and `attack` sections have every
  default filled (moved search fields are an error naming the new one)."""
  d = config.to_dict()
  given = d.get('search') or {}
  moved = sorted(set(given) & set(MOVED_TO_ATTACK))
  if moved:
    raise ValueError('search.' + ', search.'.join(moved) + ' moved to the '
                     'shared attack section: set ' + ', '.join(
                         MOVED_TO_ATTACK[k] for k in moved) + '.')
  s = default_search_config().to_dict()
  s.update(given)
  d['search'] = s
  d['attack'] = attack_config_lib.attack_config(
      ml_collections.ConfigDict(d)).to_dict()
  return ml_collections.ConfigDict(d)


def central_weights(s) -> dict[str, float]:
  """Objective weights: the preset, then `weights`, then
  `adversarial_weight`."""
  w = objective_lib.preset(s.objective)
  w.update({k: float(v) for k, v in config_io.to_dict(s.weights).items()})
  if s.get('adversarial_weight') is not None:
    w['adversarial'] = float(s.adversarial_weight)
  return objective_lib.check_weights(w)


def check_search_config(s, attack=None) -> None:
  """Fails fast on bad `config.search` (and its `attack`) values."""
  costs_lib.check_options(sram_gate=s.sram_gate, flash_proxy=s.flash_proxy,
                          precision=s.precision)
  designer_lib.DESIGNERS.lookup(s.designer)
  executors_lib.EXECUTORS.lookup(s.executor)
  for name in ('num_trials', 'batch_size', 'num_workers', 'trial_epochs'):
    v = s[name]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or \
        int(v) != v or v < 1:
      raise ValueError(f'search.{name} must be an integer >= 1, got {v!r}.')
  if attack is not None:
    if len(attack.eps_grid) != 1 or not float(attack.eps_grid[0]) >= 0:
      raise ValueError(f'A search attacks at one eps: attack.eps_grid must '
                       f'hold one value >= 0, got {list(attack.eps_grid)}.')
    if s.adversarial_attack not in attack.attacks:
      raise ValueError(f'search.adversarial_attack={s.adversarial_attack!r} '
                       f'is not in attack.attacks={list(attack.attacks)}.')
  central_weights(s)
  objective_lib.weight_ranges(central_weights(s), float(s.weight_spread),
                              config_io.to_dict(s.weight_ranges))


def _check_space_model(space, model_cfg) -> None:
  """The space's model must be the config's model (or the config names no
  model kwargs): a search never silently trains another family."""
  name = model_cfg.get('name') if model_cfg else None
  kwargs = config_io.to_dict(model_cfg.get('kwargs')) if model_cfg else {}
  if name and name != space.model and kwargs:
    raise ValueError(
        f'search space {space.name!r} parameterises model {space.model!r}, '
        f'but config.model is {name!r} with kwargs {sorted(kwargs)}: set '
        f'model.name={space.model!r} (and its kwargs) or search.space to a '
        f'space of {name!r}.')


def run_search(config: ml_collections.ConfigDict, workdir: str, *,
               evaluate_fn: Callable | None = None,
               space: spaces_lib.SearchSpace | None = None,
               executor=None) -> dict[str, Any]:
  """Runs (or resumes) a search in `workdir`; returns the summary dict.

  Args:
    config: experiment config (seed, data, model, train, attack, search);
      see `default_search_config`. `train.epochs` is the full budget of the
      final retraining, `search.trial_epochs` each candidate's.
    workdir: output directory (trials.jsonl, trials/, final/, pareto.csv,
      pareto.png, summary.json).
    evaluate_fn: `fn(params, trial) -> outcome`; default
      `CandidateEvaluator` (costs -> gate -> train -> attacks).
    space: a `SearchSpace`; default `spaces.get_space(search.space or
      model.name, **search.space_options)`.
    executor: an executor object; default built from `search.executor`.

  Returns:
    The summary written to `summary.json`.

  Raises:
    failures.SearchFailedError: no trial succeeded (nothing is written
      then but the journal; the reasons are counted in the message).
  """
  config = resolve_config(config)
  s = config.search
  # The attack section matters only to the real candidate evaluator.
  check_search_config(s, config.attack if evaluate_fn is None else None)
  if space is None:
    space = spaces_lib.get_space(s.space or config.model.name,
                                 **config_io.to_dict(s.space_options))
  _check_space_model(space, config.model)
  weights = central_weights(s)
  budget = None
  if evaluate_fn is None:
    budget = costs_lib.board_budget(s.board,
                                    flash_max_bytes=s.flash_max_bytes,
                                    sram_max_bytes=s.sram_max_bytes)
    evaluate_fn = candidate.CandidateEvaluator(config, workdir, space, budget)
  os.makedirs(workdir, exist_ok=True)
  config_io.pin_config(config, os.path.join(workdir, 'search_config.json'),
                       mutable=MUTABLE, what='search')
  journal = journal_lib.Journal(workdir)
  replay = journal.replay()
  designer = _make_designer(s, space, weights, replay)
  own_executor = executor is None
  if own_executor:
    executor = executors_lib.make_executor(
        s.executor, num_workers=int(s.num_workers), address=s.ray_address,
        cpus_per_trial=float(s.cpus_per_trial))
  t_start = time.perf_counter()
  try:
    results = run_trials(journal, designer, executor, evaluate_fn, replay,
                         num_trials=int(s.num_trials),
                         batch_size=int(s.batch_size),
                         seed=int(config.seed), weights=weights)
  finally:
    if own_executor:
      executor.close()
  failures.check_outcome(results, workdir)
  retry = [r for r in results if failures.is_retried(r)]
  if retry:
    report_lib.log(f'{len(retry)} trial(s) failed for environmental reasons '
                   f'({failures.reasons(retry)}); run the search again to '
                   'retry them.')
  return report_lib.finalize(config, workdir, results, weights, evaluate_fn,
                             search_s=time.perf_counter() - t_start,
                             budget=budget)


def _make_designer(s, space, weights, replay):
  """The configured designer, updated with the replayed journal."""
  ranges = objective_lib.weight_ranges(weights, float(s.weight_spread),
                                       config_io.to_dict(s.weight_ranges))
  designer = designer_lib.make_designer(
      s.designer, space, weight_ranges=ranges, kappa=float(s.kappa),
      n_initial_points=int(s.n_initial_points), seed=int(s.seed),
      n_acq_points=int(s.n_acq_points),
      penalty_margin=float(s.penalty_margin), liar=s.liar)
  designer.update(replay.results)
  for p in replay.pending:
    designer.add_pending(p['trial'], p['params'])
  if replay.results or replay.pending:
    report_lib.log(f'resumed: {len(replay.results)} finished trial(s) '
                   f'replayed, {len(replay.pending)} unfinished re-submitted'
                   + (f' ({len(replay.retried)} after an environmental '
                      'failure)' if replay.retried else ''))
  return designer


def _next_jobs(pending: list[dict], designer, journal, room: int,
               batch_no: int) -> list[dict[str, Any]]:
  """Unfinished trials first (a resumed batch finishes on its own, as it
  began), else `room` new suggestions, journaled before they run."""
  jobs = []
  while pending and len(jobs) < room:
    p = pending.pop(0)
    jobs.append({'trial': int(p['trial']), 'params': p['params'],
                 'weights': p.get('weights')})
  if not jobs:
    for params, tid, w in zip(designer.suggest(room), designer.last_ids,
                              designer.last_weights):
      journal.suggest(tid, params, w, batch_no)
      jobs.append({'trial': tid, 'params': params, 'weights': w})
  return jobs


def run_trials(journal, designer, executor, evaluate_fn, replay, *,
               num_trials: int, batch_size: int, seed: int,
               weights: dict[str, float]) -> list[dict[str, Any]]:
  """Schedules batches of trials until `num_trials` results exist."""
  results = list(replay.results)
  pending = list(replay.pending)
  batch_no = 1 + max([int(r.get('batch', 0)) for r in
                      replay.results + replay.pending] + [-1])
  while len(results) < num_trials:
    room = min(batch_size, num_trials - len(results))
    jobs = _next_jobs(pending, designer, journal, room, batch_no)
    for job, outcome in executor.run(evaluate_fn, jobs):
      rec = {'trial': job['trial'], 'params': job['params'],
             'weights': job.get('weights'), 'batch': batch_no, 'seed': seed,
             **outcome}
      rec['score'] = report_lib.score(rec, weights)
      rec = journal.result(rec)
      designer.update([rec])
      results.append(rec)
      report_lib.log(report_lib.describe(rec, len(results), num_trials))
    batch_no += 1
  return results
