r"""A study's white-box attack stage before and after issue 22's engine.

For each trained model of a robustness-study workdir, the study's own
attack stage (`runner.white_box_run`: the pinned study config's attacks,
eps grid, batch size, example subset and seed; the signal-space path for a
signal task) runs through two engines, interleaved in one process:

* before: the 'sweep' engine (one jitted call per batch, `vmap` over the
  eps grid, every attack on every point), with the kernels' steps in a
  rolled `lax.fori_loop` (`--before_loop=fori`), i.e. the engine the studies
  used before issue 22;
* after: the 'scheduler' engine the studies use now (eps in ascending
  order, each stage on the points still open, host-driven steps on CPU).

Each arm's first call (trace + compile + run, JAX's persistent compilation
cache off unless `--compile_cache`; its compile seconds from JAX's compile
events) is reported apart from its best rerun (`--repeats`; every call
builds its attacks anew, as a study does per model, so reruns compile
again unless the persistent cache is on); the ratio is before / after. The two engines do not
count the same thing at eps > 0 (the scheduler reports the per-example
worst case over the eps up to each one, the sweep each eps's own outcome),
so the robust accuracies printed beside the times differ where the sweep's
curve is not monotone.

Command (studies trained by `--mode=study`; any task):

  TINYROBUST_DATA_DIR=/work/shared/data python -m \
      experiments.bench_study_attack --workdir=/tmp/tinyrobust/study_har \
      [--labels=har_cnn,tcn] [--attacks=fgsm,pgd] [--repeats=1]
"""

from __future__ import annotations

import os
import time

from absl import app
from absl import flags
import ml_collections
import numpy as np

from tinyrobust import config_io
from tinyrobust import cpu_devices
from tinyrobust import fileio
from tinyrobust import train
from tinyrobust.evaluation import scheduler_state
from tinyrobust.studies.robustness import config as study_config
from tinyrobust.studies.robustness import runner
from tinyrobust.studies.robustness import trained_stage

_WORKDIR = flags.DEFINE_string('workdir', None, 'A study workdir (holds '
                               'study_config.json and models/).')
_TASK = flags.DEFINE_string('task', None, 'Task (default: the only one).')
_LABELS = flags.DEFINE_list('labels', [], 'Models (default: all trained).')
_ATTACKS = flags.DEFINE_list('attacks', [], 'Attacks (default: the '
                             "study's attack.attacks).")
_REPEATS = flags.DEFINE_integer('repeats', 1, 'Timed reruns per arm after '
                                'the first call (best kept).')
_BEFORE_LOOP = flags.DEFINE_string('before_loop', 'fori', "The 'before' "
                                   "arm's step loop ('' keeps 'auto').")
_AFTER_BATCH = flags.DEFINE_integer(
    'after_batch_size', 0, "The 'after' arm's batch size (0: the study's "
    "attack.batch_size, as the 'before' arm).")
_CACHE = flags.DEFINE_bool('compile_cache', False, "Keep JAX's persistent "
                           'compilation cache on (first calls then load).')


def _config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, 'study_config.json')
  if not os.path.exists(path):
    raise ValueError(f'--workdir {workdir!r} has no study_config.json: not '
                     f'a robustness-study workdir.')
  return ml_collections.ConfigDict(fileio.read_json(path))


def _loaded(config, task, label, workdir):
  wd = study_config.model_dir(workdir, task, label)
  entry = config.tasks[task].models[label]
  if entry.get('trained'):
    return trained_stage.load(entry, wd, label)[1:]
  if not train.is_finished(wd):
    return None
  return train.load_trained(wd)


def _arms(config, attacks: list[str]) -> dict[str, dict]:
  acfg = config.attack
  options = config_io.to_dict(acfg.get('options'))
  before = {a: dict(options.get(a) or {}) for a in attacks}
  if _BEFORE_LOOP.value:
    for a in attacks:
      if a != 'fgsm':
        before[a]['loop'] = _BEFORE_LOOP.value
  return {'before': {'engine': 'sweep', 'options': before},
          'after': {'engine': 'scheduler',
                    'batch_size': _AFTER_BATCH.value or None,
                    'options': {a: dict(options.get(a) or {})
                                for a in attacks}}}


def _timed(config, task, loaded, attacks, arm):
  model, variables, run_cfg = loaded
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.attack.attacks = list(attacks)
  cfg.attack.options = arm['options']
  if arm.get('batch_size'):
    cfg.attack.batch_size = arm['batch_size']
  start, c0 = time.perf_counter(), scheduler_state.compile_clock()
  run, _ = runner.white_box_run(cfg, task, model, variables, run_cfg,
                                engine=arm['engine'], sanity_checks=False)
  seconds = time.perf_counter() - start
  acc = {a: [round(r['robust_accuracy'], 3) for r in
             run.results['attacks'][a]['per_eps']] for a in attacks}
  return seconds, scheduler_state.compile_clock() - c0, acc


def main(argv):
  del argv
  cpu_devices.enable()  # one JAX device per core, before any JAX op
  if not _CACHE.value:
    os.environ['TINYROBUST_COMPILE_CACHE'] = '0'
  workdir = _WORKDIR.value
  if not workdir:
    raise ValueError('--workdir is required.')
  config = _config(workdir)
  tasks = list(config.tasks)
  task = _TASK.value or (tasks[0] if len(tasks) == 1 else None)
  if task not in tasks:
    raise ValueError(f'--task must be one of {tasks}, got {_TASK.value!r}.')
  labels = _LABELS.value or list(config.tasks[task].models)
  unknown = sorted(set(labels) - set(config.tasks[task].models))
  if unknown:
    raise ValueError(f'--labels {unknown} are not models of task {task!r}: '
                     f'{list(config.tasks[task].models)}.')
  attacks = _ATTACKS.value or list(config.attack.attacks)
  arms = _arms(config, attacks)
  a = config.attack
  print(f'study {workdir}, task {task}: attacks {attacks}, eps grid '
        f'{list(config.tasks[task].eps_grid)} ({config.tasks[task].eps_units}'
        f'), {a.get("max_examples")} test examples, batch {a.batch_size}; '
        f'before = sweep engine, loop {_BEFORE_LOOP.value or "auto"}; after '
        f'= scheduler, batch {_AFTER_BATCH.value or a.batch_size}; '
        f'compilation cache '
        f'{"on" if _CACHE.value else "off"}', flush=True)
  rows, total = [], {n: np.zeros(2) for n in arms}
  for label in labels:
    loaded = _loaded(config, task, label, workdir)
    if loaded is None:
      print(f'  {label}: not trained in this workdir, skipped', flush=True)
      continue
    first, best, acc, comp = {}, {n: np.inf for n in arms}, {}, {}
    for r in range(1 + _REPEATS.value):
      for name, arm in arms.items():
        s, c, acc[name] = _timed(config, task, loaded, attacks, arm)
        if r == 0:
          first[name], comp[name] = s, c
        else:
          best[name] = min(best[name], s)
    for name in arms:
      if not np.isfinite(best[name]):
        best[name] = first[name]
      total[name] += (first[name], best[name])
    rows.append((label, first, best))
    print(f'  {label}: before first {first["before"]:.1f} s (compile '
          f'{comp["before"]:.1f} s), rerun {best["before"]:.1f} s; after '
          f'first {first["after"]:.1f} s (compile {comp["after"]:.1f} s), '
          f'rerun {best["after"]:.1f} s; ratio first '
          f'{first["before"] / first["after"]:.2f}x, rerun '
          f'{best["before"] / best["after"]:.2f}x', flush=True)
    for name in arms:
      print(f'    robust accuracy per eps ({name}): {acc[name]}', flush=True)
  if rows:
    b, f = total['before'], total['after']
    print(f'attack stage of {len(rows)} models: before {b[0]:.1f} s '
          f'(reruns {b[1]:.1f} s), after {f[0]:.1f} s (reruns {f[1]:.1f} s):'
          f' {b[0] / f[0]:.2f}x first call, {b[1] / f[1]:.2f}x reruns')


if __name__ == '__main__':
  app.run(main)
