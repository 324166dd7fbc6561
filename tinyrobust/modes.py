"""Run modes: what `experiments/main.py --mode=<name>` runs.

    train     train_and_evaluate(config, workdir)
    attack    robustness of a trained run over its `attack` section
              -> attack_results.json / .csv
    profile   hardware cost of a trained run -> profile.json
    search    robust, MCU-aware architecture search
    study     the robustness study: tiny vs large models -> report.md
    search_study  the search study (Table 2): hand-crafted vs search
              without vs with the adversarial term -> report.md

Each mode is `fn(config, workdir)` registered in `MODES`; later modes (the
studies) register here too. The library modules (`train`, `evaluate`,
`hardware`, `nas`) do not import each other for these glue steps: the
modes do.

Modes on a trained run (`attack`, `profile`) use the run's own data and
model settings from its `config.json`; a `--config` may change only the
`attack` and `hardware` sections (and cosmetic training fields), and any
other difference is an error naming the keys, so an attack can never
silently evaluate another split.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

from absl import logging
import ml_collections

from tinyrobust import config_io
from tinyrobust import registry

MODES = registry.Registry('mode')
# Sections of a trained run's config that --mode=attack/profile may change.
RUN_OVERRIDABLE = ('attack', 'hardware', 'threat')


def run(mode: str, config, workdir: str) -> Any:
  """Runs the registered mode `mode`."""
  return MODES.lookup(mode)(config, workdir)


def _require_config(config, mode: str) -> None:
  if config is None:
    raise ValueError(f'--config is required for --mode={mode}.')


@MODES.register('train')
def train(config, workdir: str):
  """Trains `config`'s model in `workdir` (resumes a killed run)."""
  from tinyrobust import train as train_lib  # pylint: disable=g-import-not-at-top
  _require_config(config, 'train')
  return train_lib.train_and_evaluate(config, workdir)


def trained_run(workdir: str, config=None):
  """`(model, variables, config)` of a trained run, `config` merged in.

  Only `RUN_OVERRIDABLE` sections and `train_lib.MUTABLE_FIELDS` of `config`
  may differ from the run's own `config.json`.
  """
  from tinyrobust import train as train_lib  # pylint: disable=g-import-not-at-top
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f'--workdir {workdir!r} is a file, not a run directory.')
  model, variables, run_config = train_lib.load_trained(workdir)
  if config is None:
    return model, variables, run_config
  run_d = config_io.config_json(run_config)
  new_d = config_io.config_json(config)
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


def _check_writable(workdir: str) -> None:
  if not os.access(workdir, os.W_OK):
    raise ValueError(f'--workdir {workdir!r} is not writable; results could '
                     'not be saved.')


@MODES.register('attack')
def attack(config, workdir: str) -> dict[str, Any]:
  """Attacks a trained run over its `attack` section's eps grid.

  Evaluates the run's test split with `evaluate.evaluate_robustness` in the
  `threat` section's space (`tinyrobust.threat_model`: the model's input or
  the raw sensor signal) and, for int8 precisions, with
  `evaluate.evaluate_deployed`; writes `attack_results.json` / `.csv` (rows
  carry `space`, `eps_units`, `precision`, `crafted_on`) and
  `results.jsonl` into `workdir`.
  """
  from tinyrobust import data as data_lib  # pylint: disable=g-import-not-at-top
  from tinyrobust.attacks import config as attack_config_lib  # pylint: disable=g-import-not-at-top
  from tinyrobust.evaluation import deployed  # pylint: disable=g-import-not-at-top
  from tinyrobust import evaluate  # pylint: disable=g-import-not-at-top
  from tinyrobust.evaluation import threat_space as threat_model  # pylint: disable=g-import-not-at-top
  from tinyrobust import train as train_lib  # pylint: disable=g-import-not-at-top
  model, variables, config = trained_run(workdir, config)
  _check_writable(workdir)
  acfg = evaluate.attack_config(config)
  name, options = config.data.name, config_io.to_dict(
      config.data.get('options'))
  threat = threat_model.check_threat(config_io.to_dict(config.get('threat')),
                                     name, options)
  ds = data_lib.load(name, 'test', **options)
  prob = threat_model.attack_problem(
      threat, ds, functools.partial(model.apply, train=False), name=name,
      split='test', options=options)
  settings = dict(
      attacks=list(acfg.attacks), eps_grid=list(acfg.eps_grid),
      batch_size=acfg.batch_size, seed=int(config.get('seed', 0)),
      norm=acfg.norm, loss=acfg.loss, pgd_steps=acfg.pgd_steps,
      pgd_restarts=acfg.pgd_restarts, max_examples=acfg.max_examples,
      clip=prob.clip, options=attack_config_lib.with_eps_scale(
          acfg.get('options'), acfg.attacks, prob.eps_scale))
  results = evaluate.evaluate_robustness(
      prob.apply_fn, variables, dataclasses.replace(ds, x=prob.x, y=prob.y),
      **settings)
  finished = train_lib.is_finished(workdir)
  if not finished:
    logging.warning('%s has not finished training; attacking its best '
                    'checkpoint so far.', workdir)
  tags = {'space': prob.space, 'eps_units': prob.eps_units}
  results['threat'] = {**threat, **tags, 'info': prob.info}
  for row in results['rows']:
    row.update(tags, precision='float32', crafted_on='float32')
  extra = []
  if len(threat['precisions']) > 1:
    dep = deployed.evaluate_deployed(
        model, variables, (prob.x, prob.y),
        x_train=data_lib.load(name, 'train', **options).x,
        frontend=prob.frontend, eps_scale=prob.eps_scale,
        precisions=threat['precisions'],
        **{k: v for k, v in settings.items() if k != 'options'},
        options=config_io.to_dict(acfg.get('options')))
    results['deployed'] = dep
    configs = {n: a['config'] for n, a in results['attacks'].items()}
    for r in dep['rows']:
      if r['crafted_on'] != 'float32' or r['precision'] != 'float32':
        results['rows'].append({**r, **tags, 'flags': ''})
    extra = [(key.split('->')[1], deployed.as_results(dep, key, configs))
             for key in dep['evaluations'] if key != 'float32->float32']
  results['run'] = {'workdir': workdir, 'dataset': name, 'split': 'test',
                    'model': config.model.name,
                    'training_finished': finished,
                    'attack_config': acfg.to_dict()}
  paths = evaluate.write_results(results, workdir)
  _write_records(results, workdir, model, variables, config, ds,
                 results['threat'], extra=extra)
  evaluate.print_results(
      {**results, 'rows': [r for r in results['rows']
                           if r['precision'] == 'float32']},
      f'[{config.model.name} on {name}, test split, '
      f'{results["denominator"]} examples; {prob.space} space, eps in '
      f'{prob.eps_units} ({acfg.norm}); robust = pred(x_adv) == label and '
      'clean correct; consistency = pred(x_adv) == pred(x)]' + (
          '' if finished else ' (training NOT finished)'))
  logging.info('Wrote %s and %s', *paths)
  if 'deployed' in results:
    deployed.print_deployed(results['deployed'])
  return results


def _write_records(results, workdir, model, variables, config, ds, threat,
                   extra=()):
  """`results.jsonl`: one `tinyrobust.results` record per attack and eps,
  with the MCU cost fields when `profile.json` exists; `extra` holds
  `(precision, results)` pairs of other precisions (int8)."""
  import jax  # pylint: disable=g-import-not-at-top
  from tinyrobust import io  # pylint: disable=g-import-not-at-top
  from tinyrobust import results as results_lib  # pylint: disable=g-import-not-at-top
  prof_path = os.path.join(workdir, 'profile.json')
  profile = io.read_json(prof_path) if os.path.exists(prof_path) else None
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
        threat={**threat, 'precision': precision}, profile=profile)
  io.write_jsonl(os.path.join(workdir, 'results.jsonl'), recs)


@MODES.register('profile')
def profile(config, workdir: str) -> dict[str, Any]:
  """Profiles a trained run and writes `<workdir>/profile.json`.

  int8 is calibrated on `hardware.representative` training inputs of the
  run's dataset. Optional `config.hardware` keys: `measure` (bool, default
  True), `boards` (list).
  """
  from tinyrobust import data as data_lib  # pylint: disable=g-import-not-at-top
  from tinyrobust import hardware  # pylint: disable=g-import-not-at-top
  from tinyrobust import io  # pylint: disable=g-import-not-at-top
  model, variables, config = trained_run(workdir, config)
  hw = config_io.to_dict(config.get('hardware'))
  bad = sorted(set(hw) - {'measure', 'boards'})
  if bad:
    raise ValueError(f'Unknown config.hardware keys {bad}; valid: measure, '
                     'boards.')
  _check_writable(workdir)
  ds = data_lib.load(config.data.name, 'train',
                     **config_io.to_dict(config.data.get('options')))
  result = hardware.profile(model, variables, tuple(ds.x.shape[1:]),
                            measure=bool(hw.get('measure', True)),
                            representative_data=hardware.representative(ds.x),
                            boards=hw.get('boards'))
  result['workdir'] = os.path.abspath(workdir)
  io.write_json(os.path.join(workdir, 'profile.json'), result)
  return result


@MODES.register('search')
def search(config, workdir: str) -> dict[str, Any]:
  """Robust, MCU-aware architecture search (`tinyrobust.nas.run_search`)."""
  from tinyrobust import nas  # pylint: disable=g-import-not-at-top
  _require_config(config, 'search')
  return nas.run_search(config, workdir)


@MODES.register('study')
def study(config, workdir: str) -> dict[str, Any]:
  """The robustness study (`tinyrobust.study.run_study`): every model of
  every task trained, attacked and profiled; report.md in `workdir`."""
  from tinyrobust.studies import robustness as study_lib  # pylint: disable=g-import-not-at-top
  _require_config(config, 'study')
  return study_lib.run_study(config, workdir)


@MODES.register('search_study')
def search_study(config, workdir: str) -> dict[str, Any]:
  """The search study (Table 2): `tinyrobust.nas.search_study`."""
  from tinyrobust.studies.search import runner as ss  # pylint: disable=g-import-not-at-top
  _require_config(config, 'search_study')
  return ss.run_search_study(config, workdir)


def names() -> list[str]:
  return MODES.names()



