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
4. every attack of `config.attack` at its one eps on the validation split,
   through `tinyrobust.evaluation` (the objective's adversarial term is
   `search.adversarial_attack`'s consistency = prediction on x_adv equals
   prediction on x; the others are logged).

Timings: `cost_s`, `train_s`, `<attack>_s` per attack, and
`adversarial_share = <adv>_s / (cost_s + train_s + <adv>_s)`, the share of
the search's own per-candidate time the adversarial term costs (the other
attacks are extra and reported separately). With
`search.precompile_attacks` (default) every attack is compiled in a thread
while the candidate trains (`attack_compile_overlapped_s`; any slowdown of
training shows in `train_s`), and `<adv>_s` is the wait for that compilation
after training plus the attack's run; otherwise each attack's time includes
its JIT compilation, as a search pays it for every new architecture. Trials
skip the sanity checks (model checks, noise baseline); `final` runs them.

`final(params, workdir)` retrains a candidate with the full budget
(`config.train.epochs`) and tests it clean and under every attack.
The evaluator holds only plain data, so process pools and Ray can ship it.
"""

from __future__ import annotations

import functools
import json
import math
import os
import threading
import time
from typing import Any, Callable

import ml_collections
import numpy as np

from tinyrobust import config_io
from tinyrobust import data as data_lib
from tinyrobust import evaluation
from tinyrobust import hardware
from tinyrobust import models
from tinyrobust import train
from tinyrobust.attacks import config as attack_config_lib
from tinyrobust.nas import costs as costs_lib
from tinyrobust.nas import objective as objective_lib
from tinyrobust.nas import spaces as spaces_lib


@functools.lru_cache(maxsize=8)
def _load_split(name: str, split: str, options_json: str):
  return data_lib.load(name, split, **json.loads(options_json))


def load_split(config, split: str):
  """One split of `config.data`, cached per process."""
  opts = config_io.to_dict(config.data.get('options'))
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


def adversarial_metrics(apply_fn, variables, dataset, acfg, *,
                        seed: int = 0, evaluator=None,
                        sanity_checks: bool = True
                        ) -> tuple[dict[str, float], dict[str, float]]:
  """The search's adversarial term: `tinyrobust.evaluation` at one eps.

  Args:
    apply_fn: `apply_fn(variables, x) -> logits`, eval mode.
    variables: the trained variables.
    dataset: the split to attack (a `Dataset`; its `input_range` clips).
    acfg: the config's `attack` section (one-value `eps_grid`).
    seed: random starts and the `max_examples` subset (the same subset the
      evaluator picks for this seed).
    evaluator: a `RobustnessEvaluator` from `evaluation.prepare_run` with the
      same settings (precompiled while the candidate trained), or None.
    sanity_checks: run the model checks and the noise baseline too.

  Returns:
    `(metrics, seconds)`: `clean_accuracy`, `<name>_consistency`,
    `<name>_robust_accuracy` per attack, and `{name: seconds}` (including
    each attack's JIT compilation unless `evaluator` was precompiled).
  """
  run = evaluation.robustness_run(
      apply_fn, variables, dataset, seed=int(seed), evaluator=evaluator,
      sanity_checks=sanity_checks,
      **attack_config_lib.evaluator_settings(acfg))
  res = run.results
  if res['flags'] and any(f['type'].startswith('nonfinite')
                          for f in res['flags']):
    raise FloatingPointError(
        'the model gives non-finite logits or adversarial inputs: '
        + '; '.join(f'{f["type"]} ({f["attack"]}: {f["count"]})'
                    for f in res['flags'] if f['type'].startswith('nonfinite')))
  return evaluation.metrics_at(res), run.seconds


class _Precompile:
  """Compiles a candidate's validation attacks in a thread while it trains
  (shapes come from the abstract init), so the attack stage after training
  only runs them."""

  def __init__(self, apply_fn, model, dataset, acfg, seed: int, first: str):
    import jax  # pylint: disable=g-import-not-at-top
    x0 = np.asarray(dataset.x[:1])
    self.abstract = jax.eval_shape(
        lambda: model.init(jax.random.key(0), x0, train=False))
    self.evaluator, x, _, _ = evaluation.prepare_run(
        apply_fn, self.abstract, dataset, seed=int(seed),
        **attack_config_lib.evaluator_settings(acfg))
    self.seconds, self.error, self.first = 0.0, None, first
    self._first_done = threading.Event()
    self._thread = threading.Thread(target=self._compile, args=(x,),
                                    daemon=True)
    self._thread.start()

  def _compile(self, x):
    try:
      self.seconds = self.evaluator.precompile(
          self.abstract, x, order=[self.first],
          on_done=lambda n: self._first_done.set() if n == self.first
          else None)
    except Exception as e:  # pylint: disable=broad-except
      self.error = e  # the attack stage then compiles as usual
    finally:
      self._first_done.set()

  def wait(self) -> tuple[float, float]:
    """Blocks until compiled; returns the seconds spent waiting for the
    `first` attack and then for the others."""
    start = time.perf_counter()
    self._first_done.wait()
    mid = time.perf_counter()
    self._thread.join()
    return mid - start, time.perf_counter() - mid


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
    return train.train_and_evaluate(cfg, workdir)

  def _model(self, cfg, num_classes: int):
    return models.get_model(self.space.model, num_classes,
                            **config_io.to_dict(cfg.model.get('kwargs')))

  def costs(self, params: dict[str, Any]) -> tuple[dict[str, Any], dict]:
    """Costs of the untrained candidate and its objective terms (error and
    adversarial terms NaN until trained)."""
    return self._costs(trial_config(self.config, self.space, params,
                                    epochs=1))

  def _costs(self, cfg) -> tuple[dict[str, Any], dict]:
    s = self.config.search
    train_ds = load_split(cfg, 'train')
    c = costs_lib.candidate_costs(
        self._model(cfg, train_ds.num_classes), train_ds.input_shape,
        seed=int(cfg.seed), sram_gate=s.sram_gate,
        flash_proxy=s.flash_proxy, precision=s.precision,
        representative_data=hardware.representative(train_ds.x),
        flash_max=self.budget['flash_max'])
    sram = c['sram_bytes'] if c['sram_bytes'] is not None else 0
    t = objective_lib.terms(
        val_accuracy=None, flash_bytes=c['flash_bytes'], sram_bytes=sram,
        flops=c['flops'], fgsm_consistency=None,
        flash_max=self.budget['flash_max'], sram_max=self.budget['sram_max'],
        flops_target=float(s.flops_target))
    return c, t

  def _attack(self, cfg, variables, split: str, pre: _Precompile | None = None):
    ds = load_split(cfg, split)
    model = self._model(cfg, ds.num_classes)
    waits = pre.wait() if pre is not None else (0.0, 0.0)
    ok = pre is not None and pre.error is None
    metrics, seconds = adversarial_metrics(
        functools.partial(model.apply, train=False), variables, ds,
        self.config.attack, seed=int(cfg.seed),
        evaluator=pre.evaluator if ok else None, sanity_checks=pre is None)
    # The wait for the objective's attack is charged to it, the wait for
    # the others (compiled after it) to the next attack.
    adv = self.config.search.adversarial_attack
    adv = adv if adv in seconds else next(iter(seconds))
    others = [n for n in seconds if n != adv] or [adv]
    seconds = dict(seconds)
    seconds[adv] += waits[0]
    seconds[others[0]] += waits[1]
    return metrics, seconds

  def _precompile(self, cfg, split: str) -> _Precompile | None:
    if not self.config.search.precompile_attacks:
      return None
    ds = load_split(cfg, split)
    model = self._model(cfg, ds.num_classes)
    return _Precompile(functools.partial(model.apply, train=False), model, ds,
                       self.config.attack, int(cfg.seed),
                       self.config.search.adversarial_attack)

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
    pre = self._precompile(cfg, 'val')
    t0 = time.perf_counter()
    train_m, variables = self._train(
        cfg, os.path.join(self.workdir, 'trials', f'trial_{trial:04d}'))
    timings['train_s'] = time.perf_counter() - t0
    val_acc = float(train_m['val_accuracy'])
    if not math.isfinite(val_acc):
      raise FloatingPointError(f'validation accuracy is {val_acc}.')
    adv, seconds = self._attack(cfg, variables, 'val', pre)
    timings.update({f'{n}_s': v for n, v in seconds.items()})
    if pre is not None:
      timings['attack_compile_overlapped_s'] = pre.seconds
    adv_s = seconds[s.adversarial_attack]
    timings['adversarial_share'] = adv_s / (
        timings['cost_s'] + timings['train_s'] + adv_s)
    t = objective_lib.terms(
        val_accuracy=val_acc, flash_bytes=c['flash_bytes'],
        sram_bytes=c['sram_bytes'], flops=c['flops'],
        fgsm_consistency=adv[f'{s.adversarial_attack}_consistency'],
        flash_max=self.budget['flash_max'], sram_max=self.budget['sram_max'],
        flops_target=float(s.flops_target))
    metrics.update({'val_accuracy': val_acc,
                    'test_accuracy': float(train_m.get('test_accuracy', 'nan')),
                    'best_epoch': train_m.get('best_epoch'),
                    **{f'val_{k}': v for k, v in adv.items()}})
    return {'status': 'ok', 'terms': t, 'metrics': metrics,
            'timings': timings}

  def final(self, params: dict[str, Any], workdir: str) -> dict[str, Any]:
    """Retrains `params` with `config.train.epochs`, tests every attack."""
    cfg = trial_config(self.config, self.space, params,
                       epochs=int(self.config.train.epochs))
    return {'params': dict(params), **self._full_budget(cfg, workdir)}

  def handcrafted(self, model_kwargs: dict[str, Any], workdir: str
                  ) -> dict[str, Any]:
    """The zoo model with fixed `model_kwargs` (the hand-crafted baseline),
    trained and tested exactly like `final` (same epochs, attacks, costs)."""
    d = self.config.to_dict()
    d.pop('search', None)
    cfg = ml_collections.ConfigDict(d)
    cfg.model.name = self.space.model
    cfg.model.kwargs = ml_collections.ConfigDict(dict(model_kwargs))
    cfg.train.epochs = int(self.config.train.epochs)
    cfg.train.progress_bar = False
    return {'params': None, **self._full_budget(cfg, workdir)}

  def _full_budget(self, cfg, workdir: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    train_m, variables = self._train(cfg, workdir)
    train_s = time.perf_counter() - t0
    adv, _ = self._attack(cfg, variables, 'test')
    c, _ = self._costs(cfg)
    c.pop('cost_timings')
    return {'model': self.space.model,
            'model_kwargs': config_io.to_dict(cfg.model.kwargs),
            'epochs': int(cfg.train.epochs),
            'val_accuracy': float(train_m['val_accuracy']),
            'test_accuracy': float(train_m['test_accuracy']),
            'protocol': train_m.get('protocol', ''),
            **{f'test_{k}': v for k, v in adv.items()},
            'eps': float(self.config.attack.eps_grid[0]), **c,
            'train_s': train_s}
