"""`run_study(config, workdir)`: train, attack and profile every model.

Each model is an independent job (`ModelJob`) run through the search's
executor interface (`sequential`, `process`, `ray`), so a study spreads over
a Ray cluster or several processes. A job works in
`<workdir>/models/<task>__<label>/` in three cached stages:

  train    the model's training run (`train.train_and_evaluate`, which
           resumes a killed run; a finished one is loaded, never re-run)
  attack   FGSM/PGD over the task's eps grid on the test split
           (`runs.robustness`) ->
           attack_results.json/.csv and attack_examples.npz (per-example
           outcomes for the bootstrap); skipped when the stored results
           were made with the same attack settings
  profile  `runs.profile_model` -> profile.json; skipped when present

then, with `attack.transfer` / `attack.universal`, the study-wide transfer
and universal stages (`transfer_stage`: one journaled file per task, attack
and source, and per model and universal eps)

so a re-run of a finished study recomputes nothing and a killed study
resumes with its finished models untouched. JAX's persistent compilation
cache lives in `<workdir>/jax_cache` (or `study.compilation_cache`), so a
re-run does not recompile the attack sweeps.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from tinyrobust import config_io
from tinyrobust import evaluation
from tinyrobust import fileio
from tinyrobust import runs
from tinyrobust import train
from tinyrobust import workdir as workdir_lib
from tinyrobust.attacks import config as attack_config_lib
from tinyrobust.nas import candidate
from tinyrobust.nas import executors as executors_lib
from tinyrobust.studies.robustness import config as study_config
from tinyrobust.studies.robustness import defended
from tinyrobust.studies.robustness import report
from tinyrobust.studies.robustness import signal_space
from tinyrobust.studies.robustness import trained_stage
from tinyrobust.studies.robustness import transfer_stage


def default_study_config() -> ml_collections.ConfigDict:
  """Defaults of `config.study`."""
  s = ml_collections.ConfigDict()
  s.executor = 'sequential'    # sequential | process | ray
  s.num_workers = 1
  s.ray_address = ml_collections.config_dict.placeholder(str)
  s.bootstrap = 1000           # resamples of test examples for the gap CI
  s.compilation_cache = ''     # '' = <workdir>/jax_cache
  return s


def enable_compilation_cache(path: str) -> None:
  """Turns on JAX's persistent compilation cache in `path`."""
  os.makedirs(path, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


class ModelJob:
  """`job(params, trial) -> outcome` for one model of the study.

  Holds only plain data (picklable for process pools and Ray). `params` is
  `{'task': ..., 'label': ...}`. `train_fn(config, workdir) -> (metrics,
  variables)` is injectable (tests spy on it).
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, *,
               train_fn: Callable | None = None):
    self.config_dict = config.to_dict()
    self.workdir = workdir
    self.train_fn = train_fn

  @property
  def config(self):
    return ml_collections.ConfigDict(self.config_dict)

  def __call__(self, params: dict[str, Any], trial: int) -> dict[str, Any]:
    # The model directory's own lock: parallel jobs never share one.
    wd = study_config.model_dir(self.workdir, params['task'], params['label'])
    with workdir_lib.lock_dir(wd):
      return self._run(params, trial, wd)

  def _run(self, params: dict[str, Any], trial: int, wd: str
           ) -> dict[str, Any]:
    del trial
    task, label = params['task'], params['label']
    config = self.config
    entry = config.tasks[task].models[label]
    timings = {}
    t0 = time.perf_counter()
    final, model, variables, run_cfg = (
        trained_stage.load(entry, wd, label) if entry.get('trained') else
        self._train(entry.config, wd))
    timings['train_s'] = time.perf_counter() - t0
    t0 = time.perf_counter()
    attack = self._attack(config, task, model, variables, run_cfg, wd)
    timings['attack_s'] = time.perf_counter() - t0
    t0 = time.perf_counter()
    prof = self._profile(config, model, variables, run_cfg, wd)
    timings['profile_s'] = time.perf_counter() - t0
    return {'status': 'ok', 'timings': timings,
            'metrics': {'test_accuracy': final['test_accuracy'],
                        'params': prof.get('params'),
                        'attack_cached': attack['cached'],
                        'profile_cached': prof.get('cached', False)}}

  def _train(self, cfg, wd: str):
    cfg = ml_collections.ConfigDict(config_io.config_json(cfg))
    cfg.train.progress_bar = False
    if not train.is_finished(wd):
      (self.train_fn or train.train_and_evaluate)(cfg, wd)
    model, variables, run_cfg = train.load_trained(wd)
    final = fileio.read_json(os.path.join(wd, train.FINAL))
    return final, model, variables, run_cfg

  def _attack(self, config, task: str, model, variables, run_cfg, wd: str):
    settings = attack_settings(config, task)
    path = os.path.join(wd, evaluation.RESULTS_NAME + '.json')
    if os.path.exists(path) and fileio.read_json(path).get(
        'study_settings') == fileio.to_jsonable(settings):
      return {'cached': True}
    # Per-example state in the model's folder: a killed attack stage
    # resumes where it stopped (removed once the results are written).
    run, ds = white_box_run(config, task, model, variables, run_cfg,
                            state_path=runs.state_file(wd, settings))
    tcfg = config.tasks[task]
    res = run.results
    res['study_settings'] = settings
    res['eps_units'] = tcfg.eps_units
    res['eps_grid_in_units'] = list(tcfg.eps_grid)
    res['attack_seconds'] = run.seconds
    res['protocol'] = ds.meta.get('protocol', '')
    np.savez_compressed(
        os.path.join(wd, 'attack_examples.npz'),
        **{f'{a}__{k}': v for a, ex in run.examples.items()
           for k, v in ex.items()},
        indices=(run.indices if run.indices is not None
                 else np.arange(len(ds.y))))
    evaluation.write_results(res, wd)
    runs.clear_states(wd)
    return {'cached': False}

  def _profile(self, config, model, variables, run_cfg, wd: str):
    path = os.path.join(wd, 'profile.json')
    if os.path.exists(path):
      return {**fileio.read_json(path), 'cached': True}
    hw = config_io.to_dict(config.get('hardware'))
    ds = candidate.load_split(run_cfg, 'train')
    # A model the TFLite converter cannot export still gets its analytic
    # counts; the report shows the export error instead of flash/SRAM.
    prof = runs.profile_model(model, variables, ds.x, hw,
                              count_on_export_error=True)
    fileio.write_json(path, prof)
    return prof


def attack_settings(config, task: str) -> dict[str, Any]:
  """What a model's white-box attack stage depends on (its cache key)."""
  acfg = attack_config_lib.attack_config(config)
  tcfg = config.tasks[task]
  # The transfer/universal subsections are stages of their own.
  settings = {'attack': {k: v for k, v in acfg.to_dict().items()
                         if k not in attack_config_lib.SUBSECTIONS},
              'eps_grid': study_config.input_eps(tcfg, task).tolist(),
              'seed': int(config.seed)}
  if signal_space.is_signal(tcfg):
    settings['space'] = signal_space.threat(tcfg)
  return settings


def white_box_run(config, task: str, model, variables, run_cfg,
                  **overrides):
  """`(run, dataset)`: the study's white-box attack stage on one trained
  model (`runs.robustness` on the task's test split and eps grid, or the
  signal-space path); `overrides` replace evaluator settings (e.g.
  `engine='sweep'` in experiments/bench_study_attack.py)."""
  acfg = attack_config_lib.attack_config(config)
  tcfg = config.tasks[task]
  if signal_space.is_signal(tcfg):  # waveforms, eps maybe in dB
    return signal_space.white_box(model, variables, run_cfg, tcfg, task,
                                  acfg, seed=int(config.seed), **overrides)
  ds = candidate.load_split(run_cfg, 'test')
  grid = study_config.input_eps(tcfg, task)
  run = runs.robustness(functools.partial(model.apply, train=False),
                        variables, ds, acfg, seed=int(config.seed),
                        **{'eps_grid': grid.tolist(), **overrides})
  return run, ds


def run_study(config: ml_collections.ConfigDict, workdir: str, *,
              train_fn: Callable | None = None, executor=None
              ) -> dict[str, Any]:
  """Runs (or resumes) the study in `workdir`; writes the report.

  Returns:
    The report summary (tables and findings), also in `summary.json`.
  """
  config = resolve_config(config)
  study_config.check_study_config(config)
  transfer_stage.check_sources(config)
  fileio.check_writable_dir(workdir, create=True)
  config_io.pin_config(config, os.path.join(workdir, 'study_config.json'),
                       mutable=('study.executor', 'study.num_workers',
                                'study.ray_address', 'study.bootstrap',
                                'attack.transfer', 'attack.universal'),
                       what='study')
  enable_compilation_cache(config.study.compilation_cache or
                           os.path.join(workdir, 'jax_cache'))
  job = ModelJob(config, workdir, train_fn=train_fn)
  jobs = [{'trial': i, 'params': {'task': t, 'label': l}}
          for i, (t, l, _) in enumerate(study_config.entries(config))]
  own = executor is None
  if own:
    executor = executors_lib.make_executor(
        config.study.executor, num_workers=int(config.study.num_workers),
        address=config.study.get('ray_address'))
  outcomes = {}
  try:
    for j, outcome in executor.run(job, jobs):
      p = j['params']
      if outcome.get('status') != 'ok':
        raise RuntimeError(f'Study model {p["task"]}/{p["label"]} failed: '
                           f'{outcome.get("error")}')
      outcomes[(p['task'], p['label'])] = outcome
      print(f'[study] {p["task"]}/{p["label"]}: ' + ' '.join(
          f'{k}={v:.1f}s' for k, v in outcome['timings'].items()), flush=True)
  finally:
    if own:
      executor.close()
  transfer_stage.run_stage(config, workdir)
  return report.write_report(config, workdir, outcomes)


def resolve_config(config) -> ml_collections.ConfigDict:
  """A copy with `study`, `attack` and `hardware` defaults filled and the
  `study.adv_train` copies added (`defended.expand`)."""
  d = config_io.config_json(config)
  s = default_study_config().to_dict()
  s.update(d.get('study') or {})
  d['study'] = s
  d['attack'] = attack_config_lib.attack_config(
      ml_collections.ConfigDict(d)).to_dict()
  d.setdefault('hardware', {'measure': True})
  d.setdefault('seed', 0)
  return ml_collections.ConfigDict(defended.expand(d))
