"""Evaluating one real candidate: costs -> gate -> train -> FGSM / PGD.

`CandidateEvaluator(config, workdir, space)` is the default `evaluate_fn` of
`run_search`: `evaluator(params, trial) -> outcome` does

1. build the trial config: `config` with `model.name = space.model`,
   `model.kwargs` updated by `space.model_kwargs(params)`, `train.epochs =
   search.trial_epochs` (the `search` section is dropped, so the per-trial
   training workdir only depends on what the candidate trains on);
2. initialise the model and compute flash / SRAM / FLOPs (`costs.py`); a
   candidate over the board's flash or SRAM budget returns
   `status='infeasible'` here and is never trained;
3. `train_fn(trial_config, <workdir>/trials/trial_<id>)` (default
   `tinyrobust.train.train_and_evaluate`, which resumes a killed trial from
   its last epoch checkpoint);
4. FGSM at `search.eps` on the validation split (the objective's adversarial
   term: consistency = prediction on x_adv equals prediction on x), then PGD
   (`search.pgd_steps` steps, logged only): consistency and robust accuracy.

Timings: `cost_s`, `train_s`, `fgsm_s`, `pgd_s`, and
`adversarial_share = fgsm_s / (cost_s + train_s + fgsm_s)`, the share of the
search's own per-candidate time the adversarial term costs (the PGD logging
is extra and reported separately as `pgd_s`). Attack times include their
JIT compilation, as a search pays it for every new architecture.

`final(params, workdir)` retrains a candidate with the full budget
(`config.train.epochs`) and tests it clean, under FGSM and under PGD.
The evaluator holds only plain data, so process pools and Ray can ship it.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tinyrobust.nas import costs as costs_lib
from tinyrobust.nas import objective as objective_lib
from tinyrobust.nas import spaces as spaces_lib

MAX_CALIBRATION = 100  # training inputs calibrating an int8 export


@functools.lru_cache(maxsize=8)
def _load_split(name: str, split: str, options_json: str):
  from tinyrobust import data as data_lib  # pylint: disable=g-import-not-at-top
  return data_lib.load(name, split, **json.loads(options_json))


def load_split(config, split: str):
  """One split of `config.data`, cached per process."""
  opts = config.data.get('options')
  opts = opts.to_dict() if hasattr(opts, 'to_dict') else dict(opts or {})
  return _load_split(config.data.name, split, json.dumps(opts, sort_keys=True))


def trial_config(config: ml_collections.ConfigDict,
                 space: spaces_lib.SearchSpace, params: dict[str, Any], *,
                 epochs: int) -> ml_collections.ConfigDict:
  """The training config of one candidate (see module docstring)."""
  d = config.to_dict()
  d.pop('search', None)
  c = ml_collections.ConfigDict(d)
  c.model.name = space.model
  kwargs = dict(d['model'].get('kwargs') or {})
  kwargs.update(space.model_kwargs(params))
  c.model.kwargs = ml_collections.ConfigDict(kwargs)
  c.train.epochs = int(epochs)
  c.train.progress_bar = False
  return c


def adversarial_metrics(apply_fn, variables, x: np.ndarray, y: np.ndarray, *,
                        eps: float, clip, pgd_steps: int, loss: str = 'ce',
                        batch_size: int = 256, seed: int = 0
                        ) -> dict[str, float]:
  """Clean accuracy, FGSM and PGD consistency / robust accuracy, timed.

  Args:
    apply_fn: `apply_fn(variables, x) -> logits` in eval mode.
    variables: model variables.
    x: `[N, ...]` inputs; y: `[N]` int labels.
    eps: L-inf radius in input units.
    clip: `(lo, hi)` valid input range or None.
    pgd_steps: PGD iterations (0 skips PGD).
    loss: attack loss ('ce' or the study's 'mse').
    batch_size: examples per attack call (the last batch is padded so each
      attack compiles once).
    seed: PGD random-start key.

  Returns:
    `clean_accuracy`, `fgsm_consistency`, `fgsm_robust_accuracy`,
    `pgd_consistency`, `pgd_robust_accuracy` (fractions) and `fgsm_s`,
    `pgd_s` (seconds, including compilation).
  """
  from tinyrobust import attacks  # pylint: disable=g-import-not-at-top
  n = len(y)
  if n == 0:
    raise ValueError('Cannot attack an empty split.')
  bs = min(batch_size, n)
  predict = jax.jit(lambda v, xb: jnp.argmax(apply_fn(v, xb), -1))
  fgsm = jax.jit(attacks.make_fgsm(apply_fn, loss=loss, clip=clip))
  # 'fori': one compiled step; unrolling would recompile pgd_steps gradient
  # copies for every candidate architecture.
  pgd = (jax.jit(attacks.make_pgd(apply_fn, steps=pgd_steps, loss=loss,
                                  clip=clip, loop='fori'))
         if pgd_steps else None)
  key = jax.random.key(seed)
  clean_pred = np.zeros(n, np.int32)
  preds = {'fgsm': np.zeros(n, np.int32), 'pgd': np.zeros(n, np.int32)}
  times = {'fgsm': 0.0, 'pgd': 0.0}
  for i in range(0, n, bs):
    xb, yb = x[i:i + bs], y[i:i + bs]
    m = len(yb)
    if m < bs:
      xb = np.concatenate([xb, np.repeat(xb[-1:], bs - m, 0)])
      yb = np.concatenate([yb, np.repeat(yb[-1:], bs - m, 0)])
    clean_pred[i:i + m] = np.asarray(predict(variables, xb))[:m]
    for name, attack in (('fgsm', fgsm), ('pgd', pgd)):
      if attack is None:
        continue
      t0 = time.perf_counter()
      x_adv = attack(variables, jnp.asarray(xb), jnp.asarray(yb),
                     jax.random.fold_in(key, i), jnp.float32(eps))
      preds[name][i:i + m] = np.asarray(predict(variables, x_adv))[:m]
      times[name] += time.perf_counter() - t0
  # Same definition as tinyrobust.evaluate: robust only if the clean
  # prediction is correct and the adversarial one still is.
  clean_ok = clean_pred == y
  out = {'clean_accuracy': float(np.mean(clean_ok)),
         'fgsm_consistency': float(np.mean(preds['fgsm'] == clean_pred)),
         'fgsm_robust_accuracy': float(np.mean(clean_ok &
                                                (preds['fgsm'] == y))),
         'fgsm_s': times['fgsm'], 'pgd_s': times['pgd']}
  if pgd is not None:
    out['pgd_consistency'] = float(np.mean(preds['pgd'] == clean_pred))
    out['pgd_robust_accuracy'] = float(np.mean(clean_ok & (preds['pgd'] == y)))
  return out


class CandidateEvaluator:
  """`evaluate_fn(params, trial)` for real models (see module docstring).

  Attributes:
    config_dict: the search config as a plain dict (picklable).
    workdir: the search workdir.
    space: the search space.
    train_fn: `train_fn(config, workdir) -> (metrics, variables)`; injectable
      (tests spy on it).
    budget: `{'name', 'flash_max', 'sram_max'}`, bytes.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str,
               space: spaces_lib.SearchSpace, budget: dict[str, Any], *,
               train_fn: Callable | None = None):
    self.config_dict = config.to_dict()
    self.workdir = workdir
    self.space = space
    self.budget = dict(budget)
    self.train_fn = train_fn

  @property
  def config(self) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(self.config_dict)

  def _train(self, cfg, workdir):
    if self.train_fn is not None:
      return self.train_fn(cfg, workdir)
    from tinyrobust import train  # pylint: disable=g-import-not-at-top
    return train.train_and_evaluate(cfg, workdir)

  def costs(self, params: dict[str, Any]) -> tuple[dict[str, Any], dict]:
    """Costs of the untrained candidate and its objective terms (error and
    adversarial terms NaN until trained)."""
    from tinyrobust import models  # pylint: disable=g-import-not-at-top
    cfg, s = self.config, self.config.search
    train_ds = load_split(cfg, 'train')
    model = models.get_model(self.space.model, train_ds.num_classes,
                             **{**dict(cfg.model.get('kwargs') or {}),
                                **self.space.model_kwargs(params)})
    c = costs_lib.candidate_costs(
        model, train_ds.input_shape, seed=int(cfg.seed),
        sram_gate=s.sram_gate, flash_proxy=s.flash_proxy,
        precision=s.precision,
        representative_data=train_ds.x[:MAX_CALIBRATION],
        flash_max=self.budget['flash_max'])
    sram = c['sram_bytes'] if c['sram_bytes'] is not None else 0
    t = objective_lib.terms(
        val_accuracy=None, flash_bytes=c['flash_bytes'], sram_bytes=sram,
        flops=c['flops'], fgsm_consistency=None,
        flash_max=self.budget['flash_max'], sram_max=self.budget['sram_max'],
        flops_target=float(s.flops_target))
    return c, t

  def _attack(self, cfg, variables, split: str) -> dict[str, float]:
    from tinyrobust import models  # pylint: disable=g-import-not-at-top
    s = self.config.search
    ds = load_split(cfg, split)
    model = models.get_model(cfg.model.name, ds.num_classes,
                             **dict(cfg.model.kwargs))
    apply_fn = functools.partial(model.apply, train=False)
    x, y = ds.x, ds.y
    cap = s.get('max_attack_examples', None)
    if cap and int(cap) < len(y):
      # A seeded random subset: splits are ordered by recording, so the
      # first N windows would cover only a few participants.
      idx = np.sort(np.random.default_rng(int(cfg.seed)).choice(
          len(y), int(cap), replace=False))
      x, y = x[idx], y[idx]
    return adversarial_metrics(
        apply_fn, variables, x, y, eps=float(s.eps),
        clip=tuple(ds.input_range) if ds.input_range else None,
        pgd_steps=int(s.pgd_steps), loss=s.attack_loss,
        batch_size=int(s.attack_batch_size), seed=int(cfg.seed))

  def __call__(self, params: dict[str, Any], trial: int) -> dict[str, Any]:
    s = self.config.search
    t0 = time.perf_counter()
    c, t = self.costs(params)
    timings = {'cost_s': time.perf_counter() - t0, **c.pop('cost_timings')}
    metrics = {**c, **self.budget}
    if not objective_lib.feasible(t):
      return {'status': 'infeasible', 'terms': t, 'metrics': metrics,
              'timings': timings}
    cfg = trial_config(self.config, self.space, params,
                       epochs=int(s.trial_epochs))
    t0 = time.perf_counter()
    train_m, variables = self._train(
        cfg, os.path.join(self.workdir, 'trials', f'trial_{trial:04d}'))
    timings['train_s'] = time.perf_counter() - t0
    val_acc = float(train_m['val_accuracy'])
    if not math.isfinite(val_acc):
      raise FloatingPointError(f'validation accuracy is {val_acc}.')
    adv = self._attack(cfg, variables, 'val')
    timings['fgsm_s'], timings['pgd_s'] = adv.pop('fgsm_s'), adv.pop('pgd_s')
    timings['adversarial_share'] = timings['fgsm_s'] / (
        timings['cost_s'] + timings['train_s'] + timings['fgsm_s'])
    t = objective_lib.terms(
        val_accuracy=val_acc, flash_bytes=c['flash_bytes'],
        sram_bytes=c['sram_bytes'], flops=c['flops'],
        fgsm_consistency=adv['fgsm_consistency'],
        flash_max=self.budget['flash_max'], sram_max=self.budget['sram_max'],
        flops_target=float(s.flops_target))
    metrics.update({'val_accuracy': val_acc,
                    'test_accuracy': float(train_m.get('test_accuracy', 'nan')),
                    'best_epoch': train_m.get('best_epoch'),
                    **{f'val_{k}': v for k, v in adv.items()}})
    return {'status': 'ok', 'terms': t, 'metrics': metrics,
            'timings': timings}

  def final(self, params: dict[str, Any], workdir: str) -> dict[str, Any]:
    """Retrains `params` with `config.train.epochs`, tests clean/FGSM/PGD."""
    cfg = trial_config(self.config, self.space, params,
                       epochs=int(self.config.train.epochs))
    t0 = time.perf_counter()
    train_m, variables = self._train(cfg, workdir)
    train_s = time.perf_counter() - t0
    adv = self._attack(cfg, variables, 'test')
    c, _ = self.costs(params)
    c.pop('cost_timings')
    return {'params': dict(params), 'model': self.space.model,
            'model_kwargs': self.space.model_kwargs(params),
            'epochs': int(self.config.train.epochs),
            'val_accuracy': float(train_m['val_accuracy']),
            'test_accuracy': float(train_m['test_accuracy']),
            'protocol': train_m.get('protocol', ''),
            **{f'test_{k}': v for k, v in adv.items()},
            'eps': float(self.config.search.eps), **c, 'train_s': train_s}
