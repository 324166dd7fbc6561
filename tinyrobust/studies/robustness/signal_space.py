"""A study task attacked in the sensor signal: KWS waveforms, eps in dB.

A task with `space='signal'` (`config.SIGNAL_UNITS`) is attacked on the raw
waveform through its dataset's differentiable front-end
(`tinyrobust.evaluation.threat_space`, `runs.attack_target`): the models
still train on their MFCCs, the attacker adds a waveform. With
`eps_units='dB'` every eps is an SNR budget, converted per clip to the
radius the attacks use (`tinyrobust.evaluation.db_budget`):

    L-inf:  eps_i = rms(x_i) * 10^(-dB / 20)
    L2:     eps_i = ||x_i||_2 * 10^(-dB / 20)

and the white-box results carry both ways: `eps_db` and the radius in
waveform units (full scale 1; mean, min and max over the evaluated clips).
A universal perturbation has one radius for every clip: at a budget of s dB
it is stated against the training split's mean clip energy
(`db_budget.universal_eps`).
"""

from __future__ import annotations

import functools
from typing import Any

import ml_collections
import numpy as np

from tinyrobust import runs
from tinyrobust.attacks import registry
from tinyrobust.attacks import snr
from tinyrobust.evaluation import db_budget
from tinyrobust.nas import candidate
from tinyrobust.studies.robustness import config as study_config


def threat(task_cfg) -> dict[str, Any]:
  """The `threat` section of a task (`threat_space.check_threat`)."""
  return {'space': study_config.space(task_cfg),
          'eps_units': task_cfg.eps_units}


def is_signal(task_cfg) -> bool:
  return study_config.space(task_cfg) == 'signal'


def is_db(task_cfg) -> bool:
  return db_budget.is_db(task_cfg.eps_units)


def problem(model, run_cfg, task_cfg, split: str = 'test'):
  """The task's attack problem for one trained model: `(apply_fn, x, y,
  clip)` in the task's space (input: the model itself on its split)."""
  if not is_signal(task_cfg):
    ds = candidate.load_split(run_cfg, split)
    return (functools.partial(model.apply, train=False), np.asarray(ds.x),
            np.asarray(ds.y), None)
  t = runs.attack_target(model, run_cfg, threat=threat(task_cfg),
                         split=split)
  p = t.problem
  return p.apply_fn, np.asarray(p.x), np.asarray(p.y), p.clip


def white_box(model, variables, run_cfg, task_cfg, task: str, acfg, *,
              seed: int, **extra):
  """The white-box stage of a signal-space task: `(run, dataset)` with the
  evaluator's results; dB eps annotated both ways (module docstring).
  `extra`: more evaluator settings (e.g. `engine`)."""
  t = runs.attack_target(model, run_cfg, threat=threat(task_cfg))
  prob = t.problem
  grid = study_config.input_eps(task_cfg, task)
  overrides = {'eps_grid': grid.tolist()}
  if is_db(task_cfg):
    a = ml_collections.ConfigDict(acfg.to_dict())
    a.eps_grid = tuple(float(e) for e in task_cfg.eps_grid)
    overrides, db = db_budget.evaluator_overrides(prob, a, 'dB')
    if not np.allclose(overrides['eps_grid'], grid):
      raise ValueError(f'tasks.{task}.eps_grid {list(task_cfg.eps_grid)} dB '
                       'must be strictly decreasing.')
  run = runs.robustness(prob.apply_fn, variables, t.inputs(), acfg,
                        seed=seed, clip=prob.clip, eps_scale=prob.eps_scale,
                        **overrides, **extra)
  if is_db(task_cfg):
    x = prob.x if run.indices is None else prob.x[run.indices]
    db_budget.annotate(run.results, x, db, acfg.norm)
  run.results['space'] = 'signal'
  run.results['signal_units'] = prob.eps_units
  return run, t.inputs()


def attack_factory(name: str, options, norm: str, task_cfg):
  """For a dB task, `apply_fn -> Attack` reading eps as r (the white-box
  stage's `db_budget.relative_attacks`); otherwise None."""
  if not is_db(task_cfg):
    return None
  return lambda f: snr.relative_attack(
      registry.get_attack(name, f, **options), norm=norm)


def universal_radius(task_cfg, eps_u: float, x_train, norm: str,
                     unit: study_config.Unit) -> float:
  """A universal perturbation's radius in input units for `eps_u` in the
  task's units (dB: against the training split's mean clip energy)."""
  if is_db(task_cfg):
    return db_budget.universal_eps(x_train, eps_u, norm)
  return unit.to_input(eps_u)


def eps_both_ways(results: dict[str, Any], norm: str) -> list[dict]:
  """Per dB budget of one model's white-box results: r and the per-clip
  radius in waveform units (mean, min, max); [] when eps is not in dB."""
  rows = []
  per_eps = next(iter(results['attacks'].values()))['per_eps']
  for p in per_eps:
    if 'eps_db' not in p:
      return []
    rows.append({'eps_db': p['eps_db'], 'r': p['eps'],
                 **{k: p[f'eps_{norm}_{k}'] for k in ('mean', 'min', 'max')}})
  return rows
