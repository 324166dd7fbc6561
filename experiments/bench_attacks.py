r"""Attack-kernel benchmark: throughput and same-run speed ratios.

  python -m experiments.bench_attacks --batch_size=256 --repeats=3

Models (random init, eval mode; timings do not depend on accuracy): the
zoo's `resnet8` (MLPerf Tiny ResNet: 3 stages x 1 basic block, 16/32/64
channels, batch norm) on [B, 32, 32, 3] and the registry's 1-D 'cnn' on IMU
windows [B, 100, 6]. Prints examples/s and ratios measured in the same run:

  (a) ours (one batched jitted call) vs a per-example loop of the same
      jitted kernel on batch 1 (how the study's notebooks worked);
  (b) ours vs foolbox 3.3.4 FGSM and LinfPGD on the same Flax model
      through its JAX backend (foolbox gets the model jitted; `pip install
      -r requirements-bench.txt`; skipped with a note if not installed);
  (c) an eps grid of 8 via `vmap` in one call vs a Python loop of 8 jitted
      calls;
  (d) PGD-k time / (k x one jitted input-gradient step): the algorithmic
      floor, for every step-loop mode (this picks `DEFAULT_LOOP`).

Times are the best of `--repeats` runs after a compile/warm-up call, taken
round-robin over all batched variants of a model so that load from other
processes on a shared machine hits every variant alike. The per-example
loops are timed on `--per_example` examples and scaled. On a 2-core CPU shared
with other jobs (load ~8), batch 256, repeats 3, per_example 4,
--loops=fori,unroll: ~21 minutes, most of it compiling and running the rolled
ResNet PGD-10 (drop 'fori' from --loops for a ~10 minute run).
"""

from __future__ import annotations

import functools
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from tinyrobust import attacks
from tinyrobust import models

_BATCH = flags.DEFINE_integer('batch_size', 256, 'Attack batch size.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed runs (best is kept).')
_PER_EXAMPLE = flags.DEFINE_integer(
    'per_example', 16, 'Examples timed in the per-example loop (a).')
_STEPS = flags.DEFINE_integer('steps', 10, 'PGD steps.')
_MODELS = flags.DEFINE_list('models', ['resnet', 'imu_cnn'], 'Bench models.')
_LOOPS = flags.DEFINE_list('loops', ['fori', 'scan', 'unroll'],
                           'Step-loop modes timed in (d); ints = fori unroll '
                           'factor.')
_GRID_ATTACK = flags.DEFINE_enum('grid_attack', 'fgsm', ['fgsm', 'pgd'],
                                 'Attack swept over the eps grid in (c).')
_FOOLBOX = flags.DEFINE_bool('foolbox', True, 'Run the foolbox comparison.')
_GRID = 8


def _bench_model(name: str, batch: int):
  """(apply_fn, variables, x, y, clip) for a bench model."""
  rng = np.random.default_rng(0)
  if name == 'resnet':
    module = models.get_model('resnet8', num_classes=10)
    shape, k, clip = (32, 32, 3), 10, (0.0, 1.0)
    x = rng.uniform(0, 1, size=(batch,) + shape)
  elif name == 'imu_cnn':
    module = models.get_model('cnn', num_classes=4, features=(32, 64),
                              kernel_size=5)
    shape, k, clip = (100, 6), 4, (-10.0, 10.0)
    x = rng.normal(size=(batch,) + shape)
  else:
    raise ValueError(f'Unknown bench model {name!r}. Valid: resnet, imu_cnn.')
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(rng.integers(0, k, size=batch), jnp.int32)
  variables = module.init(jax.random.key(0), x[:1])
  return functools.partial(module.apply, train=False), variables, x, y, clip


def _round_robin(fns: dict, repeats: int) -> tuple[dict, dict]:
  """Best-of-`repeats` seconds per fn, interleaved so load hits all alike.

  Returns (best seconds, first-call seconds incl. compile) keyed like `fns`.
  """
  first, best = {}, {k: float('inf') for k in fns}
  for k, fn in fns.items():
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first[k] = time.perf_counter() - t0
    print(f'  compiled {k} ({first[k]:.1f}s)', flush=True)
  for _ in range(repeats):
    for k, fn in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fn())
      best[k] = min(best[k], time.perf_counter() - t0)
  return best, first


def _row(table, model, what, seconds, n, note=''):
  table.append((model, what, seconds, n / seconds, note))


def bench_model(name: str, table: list, ratios: list) -> None:
  b, steps, repeats = _BATCH.value, _STEPS.value, _REPEATS.value
  apply_fn, variables, x, y, clip = _bench_model(name, b)
  key = jax.random.key(1)
  eps = 8 / 255 if name == 'resnet' else 0.1
  print(f'\n== {name}: x {tuple(x.shape)}, backend '
        f'{jax.default_backend()}, default loop {attacks.default_loop()}',
        flush=True)
  ce = attacks.get_loss('ce')
  call = lambda kern: (lambda: kern(variables, x, y, key, eps))
  fns = {}
  # (d) the floor: one jitted input-gradient step on the same batch.
  grad_step = jax.jit(jax.grad(
      lambda z, v, t: jnp.sum(ce(apply_fn(v, z), t))))
  fns['grad'] = lambda: grad_step(x, variables, y)
  loops = [int(l) if l.isdigit() else l for l in _LOOPS.value]
  for loop in loops:
    fns[f'pgd/{loop}'] = call(jax.jit(attacks.make_pgd(
        apply_fn, steps=steps, clip=clip, loop=loop)))
  fgsm = jax.jit(attacks.make_fgsm(apply_fn, clip=clip))
  pgd = jax.jit(attacks.make_pgd(apply_fn, steps=steps, clip=clip))
  fns['fgsm'], fns['pgd'] = call(fgsm), call(pgd)
  fns['fgsm+info'] = call(jax.jit(attacks.make_fgsm(
      apply_fn, clip=clip, return_info=True)))
  fns['pgd+info'] = call(jax.jit(attacks.make_pgd(
      apply_fn, steps=steps, clip=clip, return_info=True)))

  # (b) foolbox through its JAX backend, with equivalent attack settings
  # (PGD: random start, step 2.5 * eps / steps); it gets the model jitted.
  fb_version = None
  if _FOOLBOX.value:
    try:
      import foolbox as fb  # pylint: disable=g-import-not-at-top
    except ImportError:
      print('foolbox not installed: pip install -r requirements-bench.txt')
    else:
      fb_version = fb.__version__
      fmodel = fb.JAXModel(jax.jit(lambda z: apply_fn(variables, z)),
                           bounds=clip)
      fb_fgsm = fb.attacks.FGSM()
      fb_pgd = fb.attacks.LinfPGD(steps=steps, rel_stepsize=2.5 / steps,
                                  random_start=True)
      fns['foolbox fgsm'] = lambda: fb_fgsm(fmodel, x, y, epsilons=eps)[1]
      fns['foolbox pgd'] = lambda: fb_pgd(fmodel, x, y, epsilons=eps)[1]

  # (c) eps grid of 8: one vmapped call vs a loop of jitted calls.
  grid = jnp.linspace(0.0, 2 * eps, _GRID)
  kern, label = ((fgsm, 'FGSM') if _GRID_ATTACK.value == 'fgsm'
                 else (pgd, f'PGD-{steps}'))
  raw = (attacks.make_fgsm(apply_fn, clip=clip) if label == 'FGSM'
         else attacks.make_pgd(apply_fn, steps=steps, clip=clip))
  sweep = jax.jit(jax.vmap(raw, in_axes=(None, None, None, None, 0)))
  fns['grid vmap'] = lambda: sweep(variables, x, y, key, grid)
  fns['grid loop'] = lambda: [kern(variables, x, y, key, e) for e in grid]

  t, first = _round_robin(fns, repeats)

  _row(table, name, 'input-gradient step', t['grad'], b)
  for loop in loops:
    k = f'pgd/{loop}'
    _row(table, name, f'PGD-{steps} loop={loop}', t[k], b,
         f'compile+1st {first[k]:.1f}s')
    ratios.append((name, f'(d) PGD-{steps} loop={loop} / ({steps} x grad '
                   'step)', t[k] / (steps * t['grad']), '<= 1.15'))
  best_loop = min(loops, key=lambda l: t[f'pgd/{l}'])
  print(f'fastest loop on {jax.default_backend()}: {best_loop}', flush=True)
  _row(table, name, 'ours FGSM', t['fgsm'], b)
  _row(table, name, f'ours PGD-{steps} (default loop)', t['pgd'], b)
  _row(table, name, 'ours FGSM +info', t['fgsm+info'], b, 'success/margin')
  _row(table, name, f'ours PGD-{steps} +info', t['pgd+info'], b,
       'success/margin')
  if fb_version:
    _row(table, name, f'foolbox {fb_version} FGSM', t['foolbox fgsm'], b)
    _row(table, name, f'foolbox {fb_version} LinfPGD-{steps}',
         t['foolbox pgd'], b)
    for what, ours, theirs in (('FGSM', 'fgsm', 'foolbox fgsm'),
                               (f'LinfPGD-{steps}', 'pgd', 'foolbox pgd')):
      ratios.append((name, f'(b) foolbox / ours, {what} (time)',
                     t[theirs] / t[ours], '>= 2'))
      ratios.append((name, f'(b) foolbox / ours +info, {what} (time)',
                     t[theirs] / t[ours + '+info'], '>= 2'))
  _row(table, name, f'eps grid x{_GRID} {label}: vmap', t['grid vmap'],
       b * _GRID)
  _row(table, name, f'eps grid x{_GRID} {label}: loop of jit',
       t['grid loop'], b * _GRID)
  ratios.append((name, f'(c) eps-grid loop of jit / vmap, {label} (time)',
                 t['grid loop'] / t['grid vmap'], '> 1'))

  # (a) per-example loops of the same kernels on batch 1: op-by-op (no jit,
  # as in the study's notebooks) and, for reference, jitted per example.
  n_pe = min(_PER_EXAMPLE.value, b)
  for label, kern, t_ours in (('FGSM', fgsm, t['fgsm']),
                              (f'PGD-{steps}', pgd, t['pgd'])):
    kern(variables, x[:1], y[:1], key, eps).block_until_ready()  # compile

    def loop_fn(kern=kern):
      return [kern(variables, x[i:i + 1], y[i:i + 1], key, eps)
              for i in range(n_pe)]

    def eager_fn(loop_fn=loop_fn):
      with jax.disable_jit():
        return loop_fn()

    with jax.disable_jit():  # warm the per-primitive eager caches
      jax.block_until_ready(kern(variables, x[:1], y[:1], key, eps))

    for mode, fn in (('eager', eager_fn), ('jitted', loop_fn)):
      t0 = time.perf_counter()
      jax.block_until_ready(fn())
      t_loop = time.perf_counter() - t0
      _row(table, name, f'per-example {mode} loop {label}', t_loop, n_pe,
           f'{n_pe} examples')
      ratios.append((name, f'(a) ours / per-example {mode} loop, {label}',
                     (b / t_ours) / (n_pe / t_loop),
                     '>= 50' if mode == 'eager' else 'info'))


def main(argv):
  del argv
  table, ratios = [], []
  for name in _MODELS.value:
    bench_model(name, table, ratios)
  print(f'\nbackend={jax.default_backend()} devices={len(jax.devices())} '
        f'batch={_BATCH.value} steps={_STEPS.value} repeats={_REPEATS.value} '
        '(best-of times)')
  print(f'{"model":8} {"what":38} {"seconds":>9} {"examples/s":>11}  note')
  for model, what, sec, eps_, note in table:
    print(f'{model:8} {what:38} {sec:9.4f} {eps_:11.1f}  {note}')
  print(f'\n{"model":8} {"ratio":52} {"value":>8}  target')
  for model, what, value, target in ratios:
    print(f'{model:8} {what:52} {value:8.2f}  {target}')


if __name__ == '__main__':
  app.run(main)
