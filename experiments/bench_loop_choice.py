r"""Host-driven vs rolled attack steps per model: the evidence behind 'auto'.

For each trained model (a `quick` training config's run, trained first if
missing), APGD-CE and Square run on the same test examples with their steps
driven from Python (`loop='host'`: one jitted call per step, donated carry)
and rolled (`loop='fori'`: one jitted `lax.while_loop` program), interleaved
(`--rounds` rounds of host then fori). The first call of each arm (trace,
compile and run) is reported apart from its best rerun; the ratio is host /
rolled run time (above 1: rolled is faster). Beside it: the forward pass's
flops from XLA's cost analysis over the batch and what `loops.auto_for`
chooses for the model (rolled below `loops.ROLL_BELOW_FLOPS`), so the
constants in `tinyrobust/attacks/loops.py` and `square.py` can be checked
on any machine. Robust accuracy is printed per arm: both arms compute the
same attack (same key), so it must agree.

Command:

  TINYROBUST_DATA_DIR=/work/shared/data python -m \
      experiments.bench_loop_choice --runs=/tmp/threat_runs \
      --models=auritus_protonn,cifar10_resnet8 [--batch=100] [--rounds=2]
"""

from __future__ import annotations

import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from experiments import trained_runs
from tinyrobust import runs
from tinyrobust.attacks import loops
from tinyrobust.attacks import registry

_RUNS = flags.DEFINE_string('runs', '/tmp/threat_runs',
                            'Folder of the trained runs (one per model).')
_MODELS = flags.DEFINE_list(
    'models', ['auritus_protonn', 'auritus_fastgrnn',
               'speech_commands_dscnn', 'cifar10_resnet8'],
    'Training configs (experiments/configs/train/<name>.py:quick).')
_BATCH = flags.DEFINE_integer('batch', 100, 'Test examples attacked.')
_ROUNDS = flags.DEFINE_integer('rounds', 2, 'Interleaved rounds (>= 1).')
_STEPS = flags.DEFINE_integer('steps', 100, 'APGD-CE steps.')
_QUERIES = flags.DEFINE_integer('queries', 500, 'Square queries.')
_EPS = flags.DEFINE_float('eps', 0.05, 'L-inf radius in input units '
                          '(images: a share of [0, 1], e.g. 2/255).')


def _problem(name: str):
  model, variables, config = runs.trained_run(
      trained_runs.trained(name, _RUNS.value))
  pixel = config.data.name == 'cifar10'
  target = runs.attack_target(model, config, threat={
      'space': 'input', 'eps_units': 'pixel' if pixel else ''})
  return target.problem, variables


def _timed(fn) -> tuple[float, object]:
  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  return time.perf_counter() - start, out


def bench_model(name: str) -> list[dict]:
  """Rows (attack, first / best-run seconds per arm, accuracy per arm)."""
  prob, variables = _problem(name)
  x = jnp.asarray(prob.x[:_BATCH.value])
  y = jnp.asarray(prob.y[:_BATCH.value])
  flops = loops.forward_flops(prob.apply_fn, variables, x)
  choice = loops.auto_for(prob.apply_fn, variables, x)
  predict = jax.jit(lambda v, z: jnp.argmax(prob.apply_fn(v, z), -1))
  rows = []
  for attack, options in (('apgd-ce', {'steps': _STEPS.value}),
                          ('square', {'queries': _QUERIES.value})):
    first, best, acc = {}, {}, {}
    for _ in range(_ROUNDS.value):
      for arm in ('host', 'fori'):
        kernel = registry.get_attack(attack, prob.apply_fn, clip=prob.clip,
                                     loop=arm, **options)
        call = lambda k=kernel: k(variables, x, y, jax.random.key(0),
                                  _EPS.value)
        if arm not in first:
          first[arm], _ = _timed(call)
        seconds, x_adv = _timed(call)
        best[arm] = min(best.get(arm, np.inf), seconds)
        acc[arm] = float(jnp.mean(predict(variables, x_adv) == y))
    rows.append({'model': name, 'attack': attack, 'options': options,
                 'flops': float(flops), 'auto': choice, 'first': first,
                 'best': best, 'robust_accuracy': acc,
                 'host_over_fori': best['host'] / best['fori']})
  return rows


def main(argv):
  del argv
  if _ROUNDS.value < 1 or _BATCH.value < 1:
    raise app.UsageError(f'--rounds and --batch must be >= 1, got '
                         f'{_ROUNDS.value}, {_BATCH.value}.')
  print(f'backend {jax.default_backend()}; {_BATCH.value} test examples, '
        f'L-inf eps {_EPS.value}; best of {_ROUNDS.value} interleaved '
        f'rounds; first call (trace + compile + run) apart; '
        f'ROLL_BELOW_FLOPS {loops.ROLL_BELOW_FLOPS:.3g}')
  print('| model | forward flops (batch) | auto | attack | host run s | '
        'rolled run s | host / rolled | first call host / rolled s | '
        'robust acc host / rolled |')
  print('|---|---|---|---|---|---|---|---|---|')
  for name in _MODELS.value:
    for r in bench_model(name):
      print(f"| {r['model']} | {r['flops']:.3g} | {r['auto']} | "
            f"{r['attack']} {r['options']} | {r['best']['host']:.3f} | "
            f"{r['best']['fori']:.3f} | {r['host_over_fori']:.2f}x | "
            f"{r['first']['host']:.1f} / {r['first']['fori']:.1f} | "
            f"{r['robust_accuracy']['host']:.3f} / "
            f"{r['robust_accuracy']['fori']:.3f} |", flush=True)


if __name__ == '__main__':
  app.run(main)
