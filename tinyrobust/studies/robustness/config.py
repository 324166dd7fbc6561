"""The robustness study's config: tasks, their models, eps grids and units.

    config.seed
    config.attack                     attack settings shared by all tasks
                                      (attacks, norm, loss, pgd_steps, ...)
    config.hardware                   {'measure': bool, 'boards': [...]}
    config.study.executor, .num_workers, .bootstrap, .compilation_cache
    config.tasks.<task>               task in TASKS ('image', 'kws', 'har')
      .space                          'input' (default: the model's input,
                                      as the study) | 'signal' (KWS: the
                                      waveform through the MFCC front-end)
      .eps_units                      one of TASK_UNITS[task] ('waveform'
                                      and 'dB' need space='signal')
      .eps_grid                       radii in `eps_units` (dB: SNR
                                      budgets, strictly decreasing, so the
                                      radii increase)
      .models.<label>                 one entry per model:
        .kind                         'tiny' | 'large'
        .input                        'features' | 'raw' (Table 1)
        .nas, .transfer               bools (Table 1: made by NAS, transfer)
        .config                       the model's training config (seed,
                                      data, model, train sections)
        .trained                      OR a model trained elsewhere, never
                                      trained here: {'path': a Keras
                                      .h5/.keras file, SavedModel directory
                                      or tinyrobust run workdir, 'model':
                                      zoo name, 'kwargs': {...}}
                                      (`trained_elsewhere`); `.config` then
                                      needs only its data section (the
                                      task's split it is evaluated on)

`check_study_config` validates all of it before any training: names, units,
eps ranges and, by building each model abstractly on its dataset's input
shape, that every model fits its data.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from tinyrobust import config_io
from tinyrobust import fileio
from tinyrobust import models
from tinyrobust import train
from tinyrobust import trained_elsewhere
from tinyrobust.nas import candidate

TASKS = ('image', 'kws', 'har')
KINDS = ('tiny', 'large')
INPUTS = ('features', 'raw')
# Datasets a task's models may use.
TASK_DATASETS = {'image': ('cifar10', 'digits'), 'kws': ('speech_commands',),
                 'har': ('auritus', 'basic_motions')}


@dataclasses.dataclass(frozen=True)
class Unit:
  """An eps unit: `scale` converts a radius in this unit to input units;
  `max_input` bounds a sensible radius in input units (None: no bound).
  A `relative` unit (dB) is an SNR budget: the attacks read the relative
  amplitude r = 10^(-dB / 20) and scale it by each clip's energy
  (`tinyrobust.evaluation.db_budget`)."""
  name: str
  scale: float
  max_input: float | None
  meaning: str
  relative: bool = False

  def to_input(self, eps: float) -> float:
    """A radius in this unit -> the attacks' eps (input units, or r)."""
    if self.relative:
      return float(10.0 ** (-float(eps) / 20.0))
    return float(eps) * self.scale

  def from_input(self, eps: float) -> float:
    """Inverse of `to_input`."""
    if self.relative:
      return float(-20.0 * np.log10(eps)) if eps > 0 else float('inf')
    return float(eps) / self.scale


TASK_UNITS = {
    'image': (Unit('pixel/255', 1 / 255, 1.0,
                   'pixel intensity in 0-255 steps (inputs in [0, 1])'),
              Unit('unit', 1.0, 1.0, 'fraction of the [0, 1] pixel range')),
    'kws': (Unit('mfcc', 1.0, None, 'MFCC coefficient units (the model '
                 'input, as the study)'),
            Unit('waveform', 1.0, 1.0, 'waveform amplitude, full scale 1 '
                 '(signal space)'),
            Unit('dB', 1.0, None, 'SNR budget in dB per clip (signal space): '
                 'L-inf radius rms(x) * 10^(-dB/20), L2 radius ||x||_2 * '
                 '10^(-dB/20)', relative=True)),
    'har': (Unit('train-std', 1.0, None, 'standard deviations of the '
                 'training split, per channel or feature (standardised '
                 'inputs)'),
            Unit('g|deg/s', 1.0, None, 'raw sensor units: g on accelerometer '
                 'channels, deg/s on gyroscope channels')),
}
SPACES = ('input', 'signal')
# Units of the sensor signal (the study's task space 'signal'), per task.
SIGNAL_UNITS = {'kws': ('waveform', 'dB')}
# The study's own image grid: eps 0.05-50 in 0-255 pixel units.
STUDY_IMAGE_EPS_PIXEL = (0.0, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)


def unit(task: str, name: str) -> Unit:
  for u in TASK_UNITS[task]:
    if u.name == name:
      return u
  raise ValueError(f'eps_units {name!r} is not a unit of task {task!r}. '
                   f'Valid: {", ".join(u.name for u in TASK_UNITS[task])}.')


def input_eps(task_cfg, task: str) -> np.ndarray:
  """The task's eps grid converted to the attacks' eps (input units; for
  dB the relative amplitudes r, ascending)."""
  u = unit(task, task_cfg.eps_units)
  return np.asarray([u.to_input(e) for e in task_cfg.eps_grid], np.float64)


def space(task_cfg) -> str:
  """Where a task's perturbation lives: 'input' (default) or 'signal'."""
  return task_cfg.get('space') or 'input'


def entries(config) -> list[tuple[str, str, Any]]:
  """`(task, label, entry)` for every model (ConfigDict order: sorted)."""
  out = []
  for task, tcfg in config.tasks.items():
    for label, entry in tcfg.models.items():
      out.append((task, label, entry))
  return out


def _check_entry(task: str, label: str, entry) -> None:
  where = f'tasks.{task}.models.{label}'
  for field, valid in (('kind', KINDS), ('input', INPUTS)):
    if entry.get(field) not in valid:
      raise ValueError(f'{where}.{field} must be one of {valid}, got '
                       f'{entry.get(field)!r}.')
  for field in ('nas', 'transfer'):
    if not isinstance(entry.get(field, False), bool):
      raise ValueError(f'{where}.{field} must be a bool, got '
                       f'{entry.get(field)!r}.')
  cfg = entry.get('config')
  if entry.get('trained'):
    _check_trained(where, entry)
  elif cfg is None or not cfg.get('data') or not cfg.get('model'):
    raise ValueError(f'{where}.config must be a training config with data '
                     'and model sections (or give .trained: a model trained '
                     'elsewhere, with .config.data).')
  if cfg.data.name not in TASK_DATASETS[task]:
    raise ValueError(f'{where} trains on {cfg.data.name!r}, which is not '
                     f'data of task {task!r} ({", ".join(TASK_DATASETS[task])}).')


def _check_trained(where: str, entry) -> None:
  """A trained-elsewhere entry: its file exists and is of a known kind, its
  zoo model is importable, a run's dataset is the entry's."""
  cfg = entry.get('config')
  if cfg is None or not cfg.get('data') or not cfg.data.get('name'):
    raise ValueError(f'{where}.config.data must name the dataset the trained '
                     f'model {entry.trained.get("path")!r} is evaluated on.')
  try:
    spec = trained_elsewhere.check_spec(entry.trained)
  except ValueError as err:
    raise ValueError(f'{where}.trained: {err}') from None
  if spec['kind'] == 'workdir':
    run = fileio.read_json(os.path.join(spec['path'], 'config.json'))
    name = (run.get('data') or {}).get('name')
    if name != cfg.data.name:
      raise ValueError(f'{where}.trained is the run {spec["path"]!r}, '
                       f'trained on {name!r}, but {where}.config.data is '
                       f'{cfg.data.name!r}.')


def architecture(entry) -> str:
  """The zoo model of an entry (its training config's or `.trained`'s)."""
  if entry.get('trained'):
    spec = trained_elsewhere.check_spec(entry.trained)
    if spec['kind'] == 'workdir':
      return fileio.read_json(os.path.join(spec['path'], 'config.json')
                          )['model']['name']
    return spec['model']
  return entry.config.model.name


def _check_task(task: str, tcfg) -> None:
  if task not in TASKS:
    raise ValueError(f'Unknown study task {task!r}. Valid: '
                     f'{", ".join(TASKS)}.')
  u = unit(task, tcfg.get('eps_units'))
  _check_space(task, tcfg, u)
  grid = np.asarray(tcfg.get('eps_grid') or (), np.float64)
  if u.relative:
    if grid.ndim != 1 or not grid.size or not np.all(np.isfinite(grid)) or \
        np.any(np.diff(grid) >= 0):
      raise ValueError(f'tasks.{task}.eps_grid in dB must be finite SNR '
                       f'budgets in strictly decreasing order (radii '
                       f'increasing), got {tcfg.get("eps_grid")!r}.')
  elif grid.ndim != 1 or not grid.size or not np.all(np.isfinite(grid)) or \
      np.any(grid < 0):
    raise ValueError(f'tasks.{task}.eps_grid must be a non-empty list of '
                     f'finite values >= 0, got {tcfg.get("eps_grid")!r}.')
  if u.max_input is not None and grid.max() * u.scale > u.max_input:
    raise ValueError(
        f'tasks.{task}.eps_grid reaches {grid.max()} {u.name} = '
        f'{grid.max() * u.scale:g} input units, beyond the input range '
        f'({u.max_input}); is the grid in other units than {u.name!r}?')
  models = tcfg.get('models')
  if not models:
    raise ValueError(f'tasks.{task}.models is empty.')
  kinds = {e.get('kind') for e in models.values()}
  for label, entry in models.items():
    _check_entry(task, label, entry)
  if kinds != set(KINDS):
    raise ValueError(f'tasks.{task} needs both tiny and large models to '
                     f'compare, got kinds {sorted(kinds)}.')


def _check_space(task: str, tcfg, u: Unit) -> None:
  """`space` is known; signal units go with space='signal' and back."""
  sp = space(tcfg)
  if sp not in SPACES:
    raise ValueError(f'tasks.{task}.space={sp!r}. Valid: '
                     f'{", ".join(SPACES)}.')
  signal_units = SIGNAL_UNITS.get(task, ())
  if sp == 'signal' and u.name not in signal_units:
    raise ValueError(
        f"tasks.{task}.space='signal' needs eps_units in "
        f'{signal_units or "(none: task {task!r} has no signal space)"}, '
        f'got {u.name!r}.')
  if sp == 'input' and u.name in signal_units:
    raise ValueError(f'tasks.{task}.eps_units={u.name!r} is a unit of the '
                     f"sensor signal; set tasks.{task}.space='signal'.")


def check_study_config(config, *, build: bool = True) -> None:
  """Validates the study config before any training (see module doc).

  With `build`, every model is also built abstractly on its dataset's
  training inputs (loads each distinct dataset once).
  """
  if not config.get('tasks'):
    raise ValueError('A study config needs at least one task in `tasks`.')
  for task, tcfg in config.tasks.items():
    _check_task(task, tcfg)
  if build:
    _check_models_fit_data(config)


def _check_models_fit_data(config) -> None:
  for task, label, entry in entries(config):
    if entry.get('trained'):
      continue  # checked by _check_trained; its fit when it is evaluated
    cfg = entry.config
    train.check_config(cfg)
    ds = candidate.load_split(cfg, 'train')
    model = models.get_model(cfg.model.name, ds.num_classes,
                             **config_io.to_dict(cfg.model.get('kwargs')))
    try:
      train.check_model_builds(model, ds.x.shape[1:])
    except Exception as err:  # pylint: disable=broad-except
      raise ValueError(
          f'tasks.{task}.models.{label} ({cfg.model.name}) does not fit its '
          f'data {cfg.data.name!r} of input shape {ds.x.shape[1:]}: '
          f'{err}') from err


def model_dir(workdir: str, task: str, label: str) -> str:
  """The folder of one model's job: `<workdir>/models/<task>__<label>`."""
  return os.path.join(workdir, 'models', f'{task}__{label}')
