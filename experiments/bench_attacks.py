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
      floor, for every step-loop mode (this picks `DEFAULT_LOOP`);
  (e) `--sections=loops`: step-loop modes on PGD-k and APGD-CE
      (`--apgd_steps`) per `--loop_plan` entry (the digits CNN: conv 16 -
      avg pool - conv 32 - avg pool - dense on [B, 8, 8, 1]; the zoo's
      ResNet8 on [B, 32, 32, 3]): 'host' with each of `--chunk_sizes` vs
      'unroll' and 'fori', each called as users call it (host: a Python
      loop over a jitted chunk; the others: one jitted call), compile time
      (first call minus the best timed call) apart from run time, run-time
      ratios vs 'unroll', 'fori' and the floor (steps x one input-gradient
      step) of the same run (this picks `loops.DEFAULT_CHUNK`).

  python -m experiments.bench_attacks --sections=loops --repeats=2 \
      --loop_plan=digits_cnn:256:apgd,resnet:64:pgd

      took 18 minutes on the shared 2-core CPU (load ~12), 9 of them
      compiling the unrolled APGD-CE-100 baseline (529 s); the figures are
      in `tinyrobust.attacks.loops` next to `DEFAULT_LOOP`/`DEFAULT_CHUNK`.

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
import flax.linen as nn
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
_LOOPS = flags.DEFINE_list('loops', ['host', 'fori', 'scan', 'unroll'],
                           'Step-loop modes timed in (d); ints = fori unroll '
                           'factor.')
_GRID_ATTACK = flags.DEFINE_enum('grid_attack', 'fgsm', ['fgsm', 'pgd'],
                                 'Attack swept over the eps grid in (c).')
_FOOLBOX = flags.DEFINE_bool('foolbox', True, 'Run the foolbox comparison.')
_SECTIONS = flags.DEFINE_list('sections', ['kernels', 'loops'],
                              'kernels: (a)-(d); loops: (e).')
_CHUNKS = flags.DEFINE_list('chunk_sizes', ['1', '5', '10', '25'],
                            '(e) host-mode chunk sizes.')
_LOOP_PLAN = flags.DEFINE_list(
    'loop_plan', ['digits_cnn:256:apgd', 'resnet:64:pgd'],
    '(e) model:batch:attacks entries; attacks joined by +: pgd (--steps), '
    'apgd (APGD-CE, --apgd_steps).')
_LOOP_BASELINES = flags.DEFINE_list('loop_baselines', ['unroll', 'fori'],
                                    '(e) non-host loop modes to compare.')
_APGD_STEPS = flags.DEFINE_integer('apgd_steps', 100, '(e) APGD steps.')
_GRID = 8


class DigitsCNN(nn.Module):
  """conv3x3(16) - avgpool2 - conv3x3(32) - avgpool2 - dense(10), NHWC (the
  digits CNN of experiments/bench_autoattack.py)."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    for features in (16, 32):
      x = nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)))(x)
      x = nn.avg_pool(nn.relu(x), (2, 2), strides=(2, 2))
    return nn.Dense(10)(x.reshape(x.shape[0], -1))


def _bench_model(name: str, batch: int):
  """(apply_fn, variables, x, y, clip) for a bench model."""
  rng = np.random.default_rng(0)
  if name == 'resnet':
    module = models.get_model('resnet8', num_classes=10)
    shape, k, clip = (32, 32, 3), 10, (0.0, 1.0)
    x = rng.uniform(0, 1, size=(batch,) + shape)
  elif name == 'digits_cnn':
    module = DigitsCNN()
    shape, k, clip = (8, 8, 1), 10, (0.0, 1.0)
    x = rng.uniform(0, 1, size=(batch,) + shape)
  elif name == 'imu_cnn':
    module = models.get_model('cnn', num_classes=4, features=(32, 64),
                              kernel_size=5)
    shape, k, clip = (100, 6), 4, (-10.0, 10.0)
    x = rng.normal(size=(batch,) + shape)
  else:
    raise ValueError(f'Unknown bench model {name!r}. Valid: resnet, '
                     'digits_cnn, imu_cnn.')
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
  for loop in loops:   # as users call it: an outer jit would turn 'host'
    fns[f'pgd/{loop}'] = call(attacks.make_pgd(   # into 'fori'
        apply_fn, steps=steps, clip=clip, loop=loop))
  fgsm = jax.jit(attacks.make_fgsm(apply_fn, clip=clip))
  pgd = attacks.make_pgd(apply_fn, steps=steps, clip=clip)
  fns['fgsm'], fns['pgd'] = call(fgsm), call(pgd)
  fns['fgsm+info'] = call(jax.jit(attacks.make_fgsm(
      apply_fn, clip=clip, return_info=True)))
  fns['pgd+info'] = call(attacks.make_pgd(
      apply_fn, steps=steps, clip=clip, return_info=True))

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


def _loop_variants(steps: int) -> dict[str, dict]:
  """(e) label -> loop options: the baselines, then 'host' per chunk size
  (chunk sizes >= steps run as one chunk and are timed once)."""
  out = {b: dict(loop=int(b) if b.isdigit() else b)
         for b in _LOOP_BASELINES.value}
  seen = set()
  for c in (int(c) for c in _CHUNKS.value):
    if min(c, steps) not in seen:
      seen.add(min(c, steps))
      out[f'host/chunk={c}'] = dict(loop='host', chunk=c)
  return out


def bench_loops(name: str, batch: int, what: list[str], table: list,
                rows: list) -> None:
  """(e) step-loop modes on PGD and APGD-CE for one model."""
  apply_fn, variables, x, y, clip = _bench_model(name, batch)
  key, eps = jax.random.key(1), 8 / 255
  print(f'\n== (e) loops {name}: x {tuple(x.shape)}, backend '
        f'{jax.default_backend()}', flush=True)
  ce = attacks.get_loss('ce')
  grad_step = jax.jit(jax.grad(
      lambda z, v, t: jnp.sum(ce(apply_fn(v, z), t))))
  fns = {'grad': lambda: grad_step(x, variables, y)}
  plan = []
  for attack in what:
    if attack == 'pgd':
      steps, label = _STEPS.value, f'PGD-{_STEPS.value}'
      make = functools.partial(attacks.make_pgd, steps=steps)
    elif attack == 'apgd':
      steps, label = _APGD_STEPS.value, f'APGD-CE-{_APGD_STEPS.value}'
      make = functools.partial(attacks.make_apgd, loss='ce', steps=steps)
    else:
      raise ValueError(f'Unknown --loop_plan attack {attack!r}. Valid: '
                       'pgd, apgd.')
    for variant, options in _loop_variants(steps).items():
      kern = make(apply_fn, clip=clip, **options)   # called as users do
      fns[f'{label} {variant}'] = (
          lambda kern=kern: kern(variables, x, y, key, eps))
    plan.append((label, steps, list(_loop_variants(steps))))
  t, first = _round_robin(fns, _REPEATS.value)
  _row(table, name, 'input-gradient step', t['grad'], batch)
  for label, steps, variants in plan:
    for variant in variants:
      k = f'{label} {variant}'
      rows.append(dict(
          model=f'{name} b{batch}', attack=label, loop=variant, run=t[k],
          compile=max(first[k] - t[k], 0.0),
          floor=t[k] / (steps * t['grad']),
          **{f'/{b}': t[k] / t[f'{label} {b}']
             for b in _LOOP_BASELINES.value}))
    best = min(variants, key=lambda v: t[f'{label} {v}'])
    print(f'fastest loop for {label} on {name}: {best}', flush=True)


def _print_loop_table(rows: list[dict]) -> None:
  """(e) one line per (model, attack, loop): best run time, compile time
  and run-time ratios against the floor and the baselines."""
  bases = [f'/{b}' for b in _LOOP_BASELINES.value]
  print(f'\n(e) loop modes (run = best of {_REPEATS.value} interleaved; '
        'compile = first call - run; floor = steps x one gradient step)')
  print(f'{"model":14} {"attack":13} {"loop":14} {"run s":>8} '
        f'{"compile s":>9} {"/floor":>7} ' + ' '.join(f'{b:>8}' for b in bases))
  for r in rows:
    print(f'{r["model"]:14} {r["attack"]:13} {r["loop"]:14} {r["run"]:8.3f} '
          f'{r["compile"]:9.1f} {r["floor"]:7.2f} ' +
          ' '.join(f'{r[b]:8.2f}' for b in bases))


def main(argv):
  del argv
  table, ratios = [], []
  if 'kernels' in _SECTIONS.value:
    for name in _MODELS.value:
      bench_model(name, table, ratios)
  loop_rows = []
  if 'loops' in _SECTIONS.value:
    for entry in _LOOP_PLAN.value:
      name, batch, what = entry.split(':')
      bench_loops(name, int(batch), what.split('+'), table, loop_rows)
  print(f'\nbackend={jax.default_backend()} devices={len(jax.devices())} '
        f'batch={_BATCH.value} steps={_STEPS.value} repeats={_REPEATS.value} '
        '(best-of times)')
  print(f'{"model":8} {"what":38} {"seconds":>9} {"examples/s":>11}  note')
  for model, what, sec, eps_, note in table:
    print(f'{model:8} {what:38} {sec:9.4f} {eps_:11.1f}  {note}')
  print(f'\n{"model":8} {"ratio":52} {"value":>8}  target')
  for model, what, value, target in ratios:
    print(f'{model:8} {what:52} {value:8.2f}  {target}')
  if loop_rows:
    _print_loop_table(loop_rows)


if __name__ == '__main__':
  app.run(main)
