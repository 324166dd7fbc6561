r"""One CPU device vs the CPU split into devices (`tinyrobust.cpu_devices`).

  python -m experiments.bench_cpu_devices --models=resnet8,dscnn \
      --batch_size=100 --rounds=5

In one process split into `--devices` CPU devices (default: one per core),
per zoo model (random init, eval mode; times do not depend on accuracy):

  (a) one input gradient of the cross-entropy on `--batch_size` inputs:
      all rows on device 0, against each device computing its share as its
      own program, side by side (`evaluation.workers.Workers.map`, what the
      scheduler does for a long stage);
  (b) the scheduler's APGD-CE (`--apgd_steps`, host-driven steps, broken
      points retired) on the same inputs labelled with the model's own
      predictions (so every point is attacked), eps `--eps`: a `Scheduler`
      over device 0 only against one over all devices.

Each variant's first call (compile + run) is timed apart; then `--rounds`
rounds alternate the variants and the best of each is kept; the ratio is
one device / split. The robust counts of (b) are printed beside the times.
"""

from __future__ import annotations

import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from tinyrobust import attacks
from tinyrobust import cpu_devices
from tinyrobust.evaluation import scheduler
from tinyrobust.evaluation import workers
from tinyrobust.models import registry

_MODELS = flags.DEFINE_list('models', ['resnet8', 'dscnn'], 'Zoo models.')
_SHAPES = {'resnet8': (32, 32, 3), 'dscnn': (49, 10, 1)}
_BATCH = flags.DEFINE_integer('batch_size', 100, 'Inputs per call.')
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Timed rounds (best kept).')
_DEVICES = flags.DEFINE_integer('devices', None, 'CPU devices (default: '
                                'one per core, cpu_devices.enable()).')
_STEPS = flags.DEFINE_integer('apgd_steps', 100, 'APGD-CE steps in (b).')
_EPS = flags.DEFINE_float('eps', 1 / 255, 'L-inf eps of (b), input units.')


def _timed(fn) -> float:
  t = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - t


def _bench(name: str, devices) -> None:
  shape = _SHAPES.get(name)
  if shape is None:
    raise ValueError(f'Unknown model {name!r}. Valid: {sorted(_SHAPES)}.')
  model = registry.get_model(name, 10)
  x = np.random.default_rng(0).uniform(
      0, 1, (_BATCH.value,) + shape).astype(np.float32)
  v = model.init(jax.random.key(0), x[:1])
  f = lambda v, x: model.apply(v, x)
  y = np.asarray(jnp.argmax(f(v, x), -1), np.int32)

  def ce(x, v, y):
    return -jnp.sum(jax.nn.log_softmax(f(v, x))[jnp.arange(len(y)), y])
  grad = jax.jit(jax.grad(ce))
  pool = workers.Workers(devices)
  reps, parts = pool.replicas(v), pool.parts(len(x))
  on = lambda d, a: jax.device_put(a, devices[d])
  one = lambda: grad(on(0, x), reps[0], on(0, y))
  split = lambda: pool.map(lambda d, _: grad(
      on(d, x[parts[d]]), reps[d], on(d, y[parts[d]])))
  apgd = {'apgd-ce': attacks.get_attack('apgd-ce', f, clip=(0.0, 1.0),
                                        steps=_STEPS.value)}
  sched = {n: scheduler.Scheduler(f, apgd, (_EPS.value,),
                                  batch_size=len(x), devices=devices[:n])
           for n in (1, len(devices))}
  counts = {}

  def run(n):
    def call():
      counts[n] = int(sched[n].run(v, x, y, seed=0)['apgd-ce']['robust'][0])
    return call
  arms = {'gradient, one device': one, 'gradient, split': split,
          'APGD-CE, one device': run(1),
          'APGD-CE, split': run(len(devices))}
  first = {k: _timed(fn) for k, fn in arms.items()}
  best = dict.fromkeys(arms, float('inf'))
  for _ in range(_ROUNDS.value):
    for k, fn in arms.items():
      best[k] = min(best[k], _timed(fn))
  print(f'{name} [{_BATCH.value}, {", ".join(map(str, shape))}] on '
        f'{len(devices)} CPU devices:')
  for what in ('gradient', 'APGD-CE'):
    a, b = best[f'{what}, one device'], best[f'{what}, split']
    print(f'  {what}: one device {a * 1e3:.1f} ms (first call '
          f'{first[f"{what}, one device"]:.2f} s), split {b * 1e3:.1f} ms '
          f'(first call {first[f"{what}, split"]:.2f} s): {a / b:.2f}x')
  print(f'  APGD-CE robust points: one device {counts[1]}, split '
        f'{counts[len(devices)]} (random starts differ by device count)')


def main(argv):
  del argv
  cpu_devices.enable(_DEVICES.value)
  devices = jax.devices()
  if len(devices) < 2 or devices[0].platform != 'cpu':
    raise ValueError(f'Needs at least 2 CPU devices, got {devices}; set '
                     f'--devices or {cpu_devices.ENV}.')
  print(f'jax {jax.__version__}, {len(devices)} CPU devices, '
        f'{cpu_devices.usable_cores()} usable cores; best of '
        f'{_ROUNDS.value} interleaved rounds after a first call')
  for name in _MODELS.value:
    _bench(name, devices)


if __name__ == '__main__':
  app.run(main)
