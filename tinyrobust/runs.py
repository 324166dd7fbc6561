"""A trained run -> threat model -> data -> evaluation -> records.

The one pipeline behind `--mode=attack` and `--mode=profile`, the closing
tables under `experiments/` and the robustness study's stages:

    model, variables, config = trained_run(workdir, config)
    target = attack_target(model, config)             # threat + test split
    run = robustness(target.problem.apply_fn, variables, target.inputs(),
                     attack_config(config), seed=0, clip=...)
    dep = deployed(model, variables, target, acfg, seed=0)  # int8 next to it
    results = attack(config, workdir)                 # all of it, + records
    profile(config, workdir)                          # hardware cost

A trained run's own data and model settings come from its `config.json`; a
`--config` may change only the `RUN_OVERRIDABLE` sections (and cosmetic
training fields), and any other difference is an error naming the keys, so
an attack can never silently evaluate another split.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import json
import os
from typing import Any, Mapping

from absl import logging
import jax
import ml_collections

from tinyrobust import adversarial
from tinyrobust import checkpoints
from tinyrobust import config_io
from tinyrobust import data as data_lib
from tinyrobust import evaluation
from tinyrobust import hardware
from tinyrobust import fileio
from tinyrobust import results as results_lib
from tinyrobust import runs_transfer
from tinyrobust import train as train_lib
from tinyrobust.attacks import config as attack_config_lib
from tinyrobust.evaluation import db_budget
from tinyrobust.evaluation import deployed as deployed_lib
from tinyrobust.evaluation import threat_space

# Sections of a trained run's config that --mode=attack/profile may change.
RUN_OVERRIDABLE = ('attack', 'hardware', 'threat')


def trained_run(workdir: str, config=None):
  """`(model, variables, config)` of a trained run, `config` merged in.

  Only `RUN_OVERRIDABLE` sections and `train.MUTABLE_FIELDS` of `config`
  may differ from the run's own `config.json`.
  """
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f'--workdir {workdir!r} is a file, not a run directory.')
  model, variables, run_config = train_lib.load_trained(workdir)
  if config is None:
    return model, variables, run_config
  run_d = config_io.config_json(run_config)
  # An 'off' adversarial section is pinned by leaving it out (issue 26).
  new_d = config_io.config_json(adversarial.canonical_config(
      ml_collections.ConfigDict(config.to_dict())))
  ignore = set(RUN_OVERRIDABLE) | {'search'}
  diff = [k for k in config_io.diff_keys(
      {k: v for k, v in run_d.items() if k not in ignore},
      {k: v for k, v in new_d.items() if k not in ignore})
          if k not in train_lib.MUTABLE_FIELDS and k != 'model.num_classes']
  if diff:
    raise ValueError(
        f'--config differs from the run in {workdir!r} at {", ".join(diff)}; '
        f'only the {", ".join(RUN_OVERRIDABLE)} sections may change on a '
        'trained run (omit --config to use the run\'s own).')
  merged = run_config.to_dict()
  for section in RUN_OVERRIDABLE:
    if section in new_d:
      merged[section] = new_d[section]
  return model, variables, ml_collections.ConfigDict(merged)


def check_writable(workdir: str) -> None:
  if not os.access(workdir, os.W_OK):
    raise ValueError(f'--workdir {workdir!r} is not writable; results could '
                     'not be saved.')


@dataclasses.dataclass(frozen=True)
class Target:
  """What an attack on a trained model evaluates.

  Attributes:
    dataset: the split the model sees (`tinyrobust.data.Dataset`).
    threat: the checked `threat` section (`threat_space.check_threat`).
    problem: the attacked function, data, clip and eps scale of its space.
    name, options: the dataset's name and loader options.
  """
  dataset: Any
  threat: dict[str, Any]
  problem: threat_space.Problem
  name: str
  options: dict[str, Any]

  def inputs(self):
    """The attacked split: the dataset with the space's inputs."""
    return dataclasses.replace(self.dataset, x=self.problem.x,
                               y=self.problem.y)


def attack_target(model, config, *, threat: Mapping[str, Any] | None = None,
                  split: str = 'test') -> Target:
  """The threat (`threat`, else `config.threat`; checked before any data is
  loaded), the run's `split` and the attack problem of the threat's space."""
  name = config.data.name
  options = config_io.to_dict(config.data.get('options'))
  section = config_io.to_dict(config.get('threat')) if threat is None \
      else dict(threat)
  checked = threat_space.check_threat(section, name, options)
  ds = data_lib.load(name, split, **options)
  prob = threat_space.attack_problem(
      checked, ds, functools.partial(model.apply, train=False), name=name,
      split=split, options=options)
  return Target(ds, checked, prob, name, options)


def robustness(apply_fn, variables, dataset, acfg, *, seed: int,
               clip: Any = 'dataset', eps_scale=None,
               **overrides) -> evaluation.RobustnessRun:
  """The evaluator on `dataset` with an `attack` section's settings
  (`overrides` replace single settings, e.g. the study's `eps_grid`)."""
  settings = attack_config_lib.evaluator_settings(acfg)
  settings.update(overrides)
  settings['options'] = attack_config_lib.with_eps_scale(
      settings['options'], settings['attacks'], eps_scale)
  return evaluation.robustness_run(apply_fn, variables, dataset,
                                   seed=int(seed), clip=clip, **settings)


def deployed(model, variables, target: Target, acfg, *, seed: int,
             precisions=None, **overrides) -> dict[str, Any]:
  """float32 vs int8 (`evaluation.deployed`) on the target's attacked
  split, calibrated on the run's training inputs."""
  settings = attack_config_lib.evaluator_settings(acfg)
  settings.update(overrides)
  prob = target.problem
  return deployed_lib.evaluate_deployed(
      model, variables, (prob.x, prob.y),
      x_train=data_lib.load(target.name, 'train', **target.options).x,
      frontend=prob.frontend, eps_scale=prob.eps_scale, clip=prob.clip,
      precisions=precisions or target.threat['precisions'], seed=int(seed),
      **settings)


def write_records(results, workdir, model, variables, config, ds, threat,
                  extra=(), transfer=None) -> None:
  """`results.jsonl`: one `tinyrobust.results` record per attack and eps,
  with the MCU cost fields when `profile.json` exists; `extra` holds
  `(precision, results)` pairs of other precisions (int8); `transfer` the
  `runs_transfer.run` output. Every record's attack names `crafted_on`
  (source workdirs) and `target`."""
  prof_path = os.path.join(workdir, 'profile.json')
  profile_d = fileio.read_json(prof_path) if os.path.exists(prof_path) else None
  params = sum(int(getattr(a, 'size', 0)) for a in jax.tree_util.tree_leaves(
      variables.get('params', variables)))
  recs = []
  for precision, res in [('float32', results)] + list(extra):
    recs += results_lib.records(
        res, model={'name': config.model.name,
                    'kwargs': config_io.to_dict(config.model.get('kwargs')),
                    'params': params},
        dataset={'name': config.data.name, 'split': 'test',
                 'protocol': (ds.meta or {}).get('protocol')},
        threat={**threat, 'precision': precision}, profile=profile_d)
  for r in recs:
    r['attack'].update(crafted_on=[workdir], target=workdir, transfer=False)
  if transfer:
    recs += runs_transfer.records(
        transfer, model=recs[0]['model'], dataset=recs[0]['dataset'],
        threat={**threat, 'precision': 'float32'},
        norm=recs[0]['threat_model']['norm'])
  fileio.write_jsonl(os.path.join(workdir, 'results.jsonl'), recs)


STATE_PREFIX = 'attack_state_'


def state_file(workdir: str, settings: Mapping[str, Any]) -> str:
  """Where a white-box evaluation of `workdir` keeps its resumable state
  (`evaluation.robustness_run(state_path=)`): named by a hash of the
  `settings` it depends on, so an evaluation with other settings starts
  afresh instead of meeting another evaluation's state."""
  text = json.dumps(fileio.to_jsonable(dict(settings)), sort_keys=True,
                    default=_setting)
  digest = hashlib.sha256(text.encode()).hexdigest()[:12]
  return os.path.join(workdir, f'{STATE_PREFIX}{digest}.npz')


def _setting(value: Any) -> Any:
  """A JSON stand-in for a setting that is an object: an attack record
  (e.g. the dB budget's relative attacks) by its name and config."""
  if hasattr(value, 'name') and hasattr(value, 'config'):
    return {'attack': value.name,
            'config': fileio.to_jsonable(dict(value.config))}
  return f'{type(value).__module__}.{type(value).__qualname__}'


def clear_states(workdir: str) -> None:
  """Removes the resumable states once the results are written."""
  for path in glob.glob(os.path.join(workdir, STATE_PREFIX + '*.npz')):
    os.remove(path)


def attack(config, workdir: str) -> dict[str, Any]:
  """Attacks a trained run over its `attack` section's eps grid.

  Evaluates the run's test split with the evaluator in the `threat`
  section's space (the model's input or the raw sensor signal) and, for
  int8 precisions, with `evaluation.deployed`; writes `attack_results.json`
  / `.csv` (rows carry `space`, `eps_units`, `precision`, `crafted_on`) and
  `results.jsonl` into `workdir`. The white-box evaluation keeps its
  per-example state in `workdir` (`state_file`), so a killed attack resumes
  where it stopped with the same counts; the state is removed once the
  results are written.
  """
  model, variables, config = trained_run(workdir, config)
  check_writable(workdir)
  acfg = attack_config_lib.attack_config(config)
  target = attack_target(model, config)
  checkpoints.check_variables_fit(model, variables,
                                  target.dataset.x.shape[1:], workdir)
  plan = runs_transfer.prepare(  # sources checked before any attack
      config, acfg, workdir, trained_run, lambda m, c: attack_target(
          m, c, threat=target.threat).problem)
  prob, seed = target.problem, int(config.get('seed', 0))
  db_overrides, db = db_budget.evaluator_overrides(  # dB: the r grid
      prob, acfg, target.threat['eps_units'])
  state = state_file(workdir, {'attack': acfg.to_dict(), 'seed': seed,
                               'threat': target.threat,
                               'overrides': db_overrides})
  run = robustness(prob.apply_fn, variables, target.inputs(), acfg,
                   seed=seed, clip=prob.clip, eps_scale=prob.eps_scale,
                   state_path=state, **db_overrides)
  results = run.results
  if db is not None:  # eps both ways: dB and the radius
    db_budget.annotate(results, prob.x if run.indices is None else
                       prob.x[run.indices], db, acfg.norm)
  finished = train_lib.is_finished(workdir)
  if not finished:
    logging.warning('%s has not finished training; attacking its best '
                    'checkpoint so far.', workdir)
  tags = {'space': prob.space, 'eps_units': prob.eps_units if db is None
          else db_budget.snr.RATIO_UNITS}  # dB rows: eps is r, + eps_db
  results['threat'] = {**target.threat, **tags, 'info': prob.info}
  for row in results['rows']:
    row.update(tags, precision='float32', crafted_on='float32')
  extra = []
  if len(target.threat['precisions']) > 1:
    extra = _add_deployed(results, deployed(model, variables, target, acfg,
                                            seed=seed), tags)
  results['run'] = {'workdir': workdir, 'dataset': target.name,
                    'split': 'test', 'model': config.model.name,
                    'training_finished': finished,
                    'attack_config': acfg.to_dict()}
  if plan is not None:
    results['transfer'] = runs_transfer.run(
        plan, acfg, target, variables, workdir=workdir, seed=seed,
        train_problem=lambda: _xy(attack_target(
            model, config, threat=target.threat, split='train').problem))
  paths = evaluation.write_results(results, workdir)
  write_records(results, workdir, model, variables, config, target.dataset,
                results['threat'], extra=extra,
                transfer=results.get('transfer'))
  clear_states(workdir)
  evaluation.print_results(
      {**results, 'rows': [r for r in results['rows']
                           if r['precision'] == 'float32']},
      f'[{config.model.name} on {target.name}, test split, '
      f'{results["denominator"]} examples; {prob.space} space, eps in '
      f'{prob.eps_units} ({acfg.norm}); robust = pred(x_adv) == label and '
      'clean correct; consistency = pred(x_adv) == pred(x)]' + (
          '' if finished else ' (training NOT finished)'))
  logging.info('Wrote %s and %s', *paths)
  if 'deployed' in results:
    deployed_lib.print_deployed(results['deployed'])
  return results


def _xy(problem):
  return problem.x, problem.y


def _add_deployed(results, dep, tags) -> list[tuple[str, dict[str, Any]]]:
  """Joins an `evaluate_deployed` result to the float32 results (its rows
  other than float32->float32); returns the int8 `(precision, results)`
  pairs for the records."""
  results['deployed'] = dep
  configs = {n: a['config'] for n, a in results['attacks'].items()}
  for r in dep['rows']:
    if r['crafted_on'] != 'float32' or r['precision'] != 'float32':
      results['rows'].append({**r, **tags, 'flags': ''})
  return [(key.split('->')[1], deployed_lib.as_results(dep, key, configs))
          for key in dep['evaluations'] if key != 'float32->float32']


def profile_model(model, variables, x_train, hw: Mapping[str, Any], *,
                  count_on_export_error: bool = False) -> dict[str, Any]:
  """`hardware.profile` with int8 calibrated on `hardware.representative`
  of `x_train`; `hw` is the `hardware` section (`measure`, `boards`).

  With `count_on_export_error`, a model the TFLite converter cannot export
  still gets its analytic counts and an `export_error` (the study's report
  shows it instead of flash/SRAM).
  """
  shape = tuple(x_train.shape[1:])
  try:
    return hardware.profile(model, variables, shape,
                            measure=bool(hw.get('measure', True)),
                            representative_data=hardware.representative(
                                x_train), boards=hw.get('boards'))
  except Exception as err:  # pylint: disable=broad-except
    if not count_on_export_error:
      raise
    prof = hardware.count(model, variables, shape)
    prof['export_error'] = f'{type(err).__name__}: {err}'
    for p in ('float32', 'int8'):
      prof.pop(p, None)
    return prof


def profile(config, workdir: str) -> dict[str, Any]:
  """Profiles a trained run and writes `<workdir>/profile.json`.

  int8 is calibrated on `hardware.representative` training inputs of the
  run's dataset. Optional `config.hardware` keys: `measure` (bool, default
  True), `boards` (list).
  """
  model, variables, config = trained_run(workdir, config)
  hw = config_io.to_dict(config.get('hardware'))
  bad = sorted(set(hw) - {'measure', 'boards'})
  if bad:
    raise ValueError(f'Unknown config.hardware keys {bad}; valid: measure, '
                     'boards.')
  check_writable(workdir)
  ds = data_lib.load(config.data.name, 'train',
                     **config_io.to_dict(config.data.get('options')))
  checkpoints.check_variables_fit(model, variables, ds.x.shape[1:], workdir)
  result = profile_model(model, variables, ds.x, hw)
  result['workdir'] = os.path.abspath(workdir)
  fileio.write_json(os.path.join(workdir, 'profile.json'), result)
  return result
