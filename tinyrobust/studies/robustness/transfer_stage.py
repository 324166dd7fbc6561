"""The study's transfer and universal stages: the attacker without access.

Run after every model job finished (`run_study`), when the study's `attack`
section has `transfer` and/or `universal` subsections
(`tinyrobust.attacks.config.transfer_config` / `universal_config`):

  transfer   per task, input group, transfer attack and source: the source
             (a model, or the 'ensemble[large]' / 'ensemble[tiny]' mean of
             logits) attacked white-box on the white-box stage's test
             examples, eps grid, seed, batch size and key index
             (`evaluation.transfer_matrix`, scheduler engine), the result
             judged by every model of the group ->
             `transfer/<task>__<attack>__<source>.json` (records) and `.npz`
             (per-example outcomes for the confidence intervals)
  universal  per model and universal eps: one SGD-UAP perturbation fitted on
             the training split (`attacks.fit_universal`), saved with its
             protocol as `universal/<task>__<label>__eps<eps>.npz`, and
             evaluated on the same test examples on every model of the
             group -> `..._eval.json` / `_eval.npz`

Models of a task are grouped by their input data (dataset name and
options): an example crafted for raw IMU windows cannot be fed to a model of
window features, so transfer is measured within a group only.

Each unit of work is journaled as its own file with the settings it was
made with; a killed study resumes at the first missing or stale unit, and a
finished one recomputes nothing.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from tinyrobust import config_io
from tinyrobust import fileio
from tinyrobust import train
from tinyrobust.attacks import config as attack_config_lib
from tinyrobust.attacks import universal as universal_lib
from tinyrobust.data import audio
from tinyrobust.evaluation import deployed
from tinyrobust.evaluation import transfer as transfer_lib
from tinyrobust.nas import candidate
from tinyrobust.studies.robustness import config as study_config
from tinyrobust.studies.robustness import signal_space

TRANSFER_DIR = 'transfer'
UNIVERSAL_DIR = 'universal'
INT8 = '@int8'  # the target name suffix of a model's int8 LiteRT export
INT8_ERRORS = '__int8_errors.json'  # per task: label -> export error
OUTCOME_KEYS = ('clean', 'robust', 'consistent', 'transferred', 'nonfinite')


def input_groups(config, task: str) -> list[list[str]]:
  """The task's model labels grouped by input data (name and options), in
  config order; models of one group see the same test examples."""
  groups: dict[str, list[str]] = {}
  for label, entry in config.tasks[task].models.items():
    data = entry.config.data
    key = json.dumps([data.name, config_io.to_dict(data.get('options'))],
                     sort_keys=True)
    groups.setdefault(key, []).append(label)
  return list(groups.values())


def check_sources(config) -> None:
  """`attack.transfer.sources` must be model labels of every task (or
  empty); raises ValueError naming the unknown label."""
  acfg = attack_config_lib.attack_config(config)
  tcfg = attack_config_lib.transfer_config(acfg)
  attack_config_lib.universal_config(acfg)
  if tcfg is None:
    return
  for task, t in config.tasks.items():
    bad = [s for s in tcfg['sources'] if s not in t.models]
    if bad:
      raise ValueError(f'attack.transfer.sources {bad} are not models of '
                       f'task {task!r}; in a study the sources are model '
                       f'labels: {", ".join(t.models)} (or () for all).')


def _loaded(workdir: str, task: str, label: str, task_cfg) -> dict[str, Any]:
  wd = study_config.model_dir(workdir, task, label)
  model, variables, run_cfg = train.load_trained(wd)
  white = fileio.read_json(os.path.join(wd, 'attack_results.json'))
  with np.load(os.path.join(wd, 'attack_examples.npz')) as z:
    indices = np.asarray(z['indices'])
  # The task's space: the model's input, or the waveform via its front-end.
  apply_fn, x, y, _ = signal_space.problem(model, run_cfg, task_cfg)
  return {'apply': apply_fn, 'variables': variables, 'config': run_cfg,
          'white': white, 'indices': indices, 'model': model, 'x': x, 'y': y}


def _group_data(models: dict[str, Any]):
  """Test examples (the white-box subset) and clip, shared by the group."""
  first = next(iter(models.values()))
  for label, m in models.items():
    if not np.array_equal(m['indices'], first['indices']):
      raise ValueError(f'{label} was attacked on other test examples than '
                       f'the rest of its input group; re-run its attack '
                       'stage.')
  idx = first['indices']
  clip = first['white'].get('clip')
  clip = None if clip is None else (np.asarray(clip[0], np.float32),
                                    np.asarray(clip[1], np.float32))
  return first['x'][idx], first['y'][idx], clip


def _int8_targets(models, task_cfg, batch_size: int, wd: str, task: str
                  ) -> dict[str, Any]:
  """`<label>@int8` -> LiteRT int8 logits of each float model's export
  (`evaluation.deployed.litert_logits`; signal space: the front-end in
  float, its output quantised at the int8 model's input). A model the
  converter cannot export is left out and its error kept in
  `<task>__int8_errors.json` (the report names it)."""
  out, errors = {}, {}
  for label, m in models.items():
    frontend = None
    if signal_space.is_signal(task_cfg):
      frontend = audio.feature_fn(m['config'].data.options.features)
    x_train = candidate.load_split(m['config'], 'train').x
    try:
      out[f'{label}{INT8}'] = deployed.litert_logits(
          m['model'], m['variables'], np.asarray(x_train),
          batch_size=batch_size, frontend=frontend)
    except Exception as err:  # pylint: disable=broad-except
      errors[label] = f'{type(err).__name__}: {err}'[:500]
      print(f'[study] {task}/{label}: no int8 target ({errors[label]})',
            flush=True)
  fileio.write_json(os.path.join(wd, task + INT8_ERRORS), errors)
  return out


def _int8_names(wd: str, task: str, group) -> list[str]:
  """The int8 targets of a group, less the exports known to fail."""
  path = os.path.join(wd, task + INT8_ERRORS)
  failed = fileio.read_json(path) if os.path.exists(path) else {}
  return [f'{l}{INT8}' for l in group if l not in failed]


def _sources(config, tcfg, task: str, group: list[str], models):
  out = {s: (models[s]['apply'], models[s]['variables'])
         for s in (tcfg['sources'] or group) if s in group}
  if tcfg['ensemble']:
    for kind in study_config.KINDS:
      members = [l for l in group
                 if config.tasks[task].models[l].kind == kind]
      if len(members) >= 2:
        out[f'ensemble[{kind}]'] = {
            l: (models[l]['apply'], models[l]['variables']) for l in members}
  return out


def _cached(path: str, settings: dict[str, Any]) -> bool:
  return os.path.exists(path) and os.path.exists(path[:-5] + '.npz') and \
      fileio.read_json(path).get('settings') == fileio.to_jsonable(settings)


def _save(path: str, result: transfer_lib.TransferResult, settings) -> None:
  np.savez_compressed(path[:-5] + '.npz', **{
      f'{s}|{t}|{k}': v for (s, t), ex in result.examples.items()
      for k, v in ex.items()})
  fileio.write_json(path, {'settings': settings, 'records': result.records,
                       'protocol': result.protocol})


def load_unit(path: str) -> tuple[list[dict[str, Any]], dict]:
  """`(records, examples)` of one stored unit: examples keyed `(crafted_on,
  target)` -> outcome name -> bool array."""
  recs = fileio.read_json(path)['records']
  examples: dict[tuple[str, str], dict[str, np.ndarray]] = {}
  with np.load(path[:-5] + '.npz') as z:
    for key in z.files:
      s, t, k = key.split('|')
      examples.setdefault((s, t), {})[k] = np.asarray(z[key])
  return recs, examples


def _space_key(task_cfg, u=None, eps_u=None) -> dict[str, Any]:
  """The settings that name the space (none for the model's input, so the
  units stored before signal-space tasks stay valid) and, for a universal
  perturbation in scaled units, its radius."""
  out = {'eps': u.to_input(eps_u)} if u is not None and not u.relative else {}
  if signal_space.is_signal(task_cfg):
    out['space'] = signal_space.threat(task_cfg)
  return out


def _transfer(config, acfg, tcfg, task, group, models, data, wd) -> None:
  x, y, clip = data
  task_cfg = config.tasks[task]
  grid = study_config.input_eps(task_cfg, task)
  opts = attack_config_lib.transfer_attack_options(acfg, tcfg, clip=clip)
  targets = {l: (models[l]['apply'], models[l]['variables']) for l in group}
  int8 = None
  for name in tcfg['attacks']:
    for src, spec in _sources(config, tcfg, task, group, models).items():
      path = os.path.join(wd, f'{task}__{name}__{src}.json')
      # int8 targets only for float single sources (the float -> int8 row)
      host = tcfg['int8'] and not src.startswith('ensemble[')
      settings = {'attack': name, 'options': opts[name], 'seed': int(
          config.seed), 'eps_grid': grid.tolist(), 'targets': group + (
              _int8_names(wd, task, group) if host else []),
                  'batch_size': int(acfg.batch_size),
                  'attack_index': attack_config_lib.attack_index(acfg, name),
                  'examples': int(len(x)), **_space_key(task_cfg)}
      settings = fileio.to_jsonable(settings)
      if _cached(path, settings):
        continue
      if host and int8 is None:
        int8 = _int8_targets({l: models[l] for l in group}, task_cfg,
                             int(acfg.batch_size), wd, task)
        settings['targets'] = group + list(int8)
      result = transfer_lib.transfer_matrix(
          {src: spec}, targets, x, y, eps_grid=grid, seed=int(config.seed),
          batch_size=int(acfg.batch_size), attack=name, options=opts[name],
          attack_factory=signal_space.attack_factory(
              name, opts[name], acfg.norm, task_cfg),
          attack_index=settings['attack_index'], engine='scheduler',
          eps_units=task_cfg.eps_units, host_targets=int8 if host else None)
      _save(path, result, settings)
      print(f'[study] transfer {task}/{name} crafted on {src}', flush=True)


def universal_eps(config, ucfg, task: str) -> list[float]:
  """The universal radii of a task in its eps units."""
  grid = [float(e) for e in config.tasks[task].eps_grid if e > 0]
  return [float(e) for e in ucfg['eps']] or grid


def _universal(config, acfg, ucfg, task, group, models, data, wd) -> None:
  x, y, clip = data
  task_cfg = config.tasks[task]
  u = study_config.unit(task, task_cfg.eps_units)
  targets = {l: (models[l]['apply'], models[l]['variables']) for l in group}
  for label in group:
    m, train_xy = models[label], None
    for eps_u in universal_eps(config, ucfg, task):
      stem = os.path.join(wd, f'{task}__{label}__eps{eps_u:g}')
      settings = fileio.to_jsonable({
          'eps_in_units': eps_u, 'norm': acfg.norm,
          'loss': acfg.loss, 'seed': int(config.seed), 'targets': group,
          'examples': int(len(x)), **_space_key(task_cfg, u, eps_u),
          **{k: ucfg[k] for k in (
              'epochs', 'batch_size', 'rel_step_size', 'loss_clamp')}})
      if _cached(stem + '_eval.json', settings) and os.path.exists(
          stem + '.npz'):
        continue
      if train_xy is None:  # once per model (waveforms: a front-end pass)
        train_xy = signal_space.problem(m['model'], m['config'], task_cfg,
                                        'train')[1:3]
      x_train, y_train = train_xy
      eps = signal_space.universal_radius(task_cfg, eps_u, x_train,
                                          acfg.norm, u)
      uap = universal_lib.fit_universal(
          m['apply'], m['variables'], x_train, y_train, eps=eps,
          norm=acfg.norm, clip=clip, eps_units=u.name,
          epochs=ucfg['epochs'], batch_size=ucfg['batch_size'],
          step_size=ucfg['rel_step_size'] * eps if eps > 0 else None,
          loss=acfg.loss, loss_clamp=ucfg['loss_clamp'],
          seed=int(config.seed), source_names=[label])
      uap.protocol.update(eps_in_units=eps_u, task=task, split='train',
                          dataset=m['config'].data.name,
                          space=signal_space.threat(task_cfg)['space'])
      if signal_space.is_db(task_cfg):
        uap.protocol.update(eps_db=eps_u, radius_formula=(
            'one radius for every clip: 10^(-dB/20) x the training split '
            "mean clip rms (L-inf) / L2 norm (db_budget.universal_eps)"))
      universal_lib.save_universal(stem + '.npz', uap)
      result = transfer_lib.universal_transfer(
          uap, targets, x, y, batch_size=int(acfg.batch_size))
      for r in result.records:
        r['eps_in_units'] = eps_u
        r['white_box'] = r['target'] == label
      _save(stem + '_eval.json', result, settings)
      print(f'[study] universal {task}/{label} eps={eps_u:g} {u.name}',
            flush=True)


def run_stage(config, workdir: str) -> bool:
  """Runs (or resumes) the transfer and universal stages of every task;
  returns whether the config asks for either."""
  acfg = attack_config_lib.attack_config(config)
  tcfg = attack_config_lib.transfer_config(acfg)
  ucfg = attack_config_lib.universal_config(acfg)
  if tcfg is None and ucfg is None:
    return False
  for task in config.tasks:
    for group in input_groups(config, task):
      models = {l: _loaded(workdir, task, l, config.tasks[task])
                for l in group}
      data = _group_data(models)
      if tcfg is not None and len(group) > 1:
        wd = os.path.join(workdir, TRANSFER_DIR)
        os.makedirs(wd, exist_ok=True)
        _transfer(config, acfg, tcfg, task, group, models, data, wd)
      if ucfg is not None:
        wd = os.path.join(workdir, UNIVERSAL_DIR)
        os.makedirs(wd, exist_ok=True)
        _universal(config, acfg, ucfg, task, group, models, data, wd)
  return True
