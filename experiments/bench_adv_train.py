r"""Adversarial-training cost: one epoch as a multiple of a standard epoch.

  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.bench_adv_train

For each `--models` entry (a training config), the jitted train step of
standard training and of `train.adversarial` FGSM-RS, PGD-AT and TRADES
(`--steps` inner PGD steps; 'loop' is the step loop inside the jitted step,
`adversarial.train_loop('auto')` = 'fori', and PGD-AT is also timed with
'unroll' to justify that choice) is built exactly as the trainer builds
it (`train.make_train_step(..., defence=adversarial.build(...))`), compiled
once (compile time = first call minus the best timed run, reported apart),
then timed on the same `--timed_steps` batches, the methods interleaved
round-robin over `--repeats` rounds (best kept), so load from other
processes hits every method alike. An epoch is `steps_per_epoch` train
steps (the config's split and batch) plus, for adversarial runs, one epoch
check (PGD-`check_steps` on 256 validation examples, timed once after a
warm-up call); the printed ratios are per train step and per epoch with the
check, against standard training in the same run.

Models: 'digits_cnn' (experiments/configs/train/digits_cnn.py: conv 32/64
+ BN on [8, 8, 1] digits, batch 32, eps 0.1 on [0, 1] pixels) and
'auritus_tcn' (train/auritus_tcn.py:quick: the 1,057-parameter TCN on
[550, 6] standardised AURITUS windows, batch 32, eps 0.1 train-std).

Measured (defaults: PGD-AT and TRADES 10 steps, 5 timed steps x 3 rounds;
2-core CPU shared with other jobs at load ~10-13, so the process got about
a third of a core: 9.5 min wall; ratios are same-run, absolute times are
load-inflated and the digits rows, ~5 ms per step, are noisy):

  model        method         x std per step   x std per epoch (+ check)
  digits_cnn   fgsm_rs              1.58             5.83
               pgd_at-10            7.93            11.91
               trades-10            7.43            10.12
               pgd_at-10 unroll     4.22             4.22 (no check)
  auritus_tcn  fgsm_rs              1.59             2.84
               pgd_at-10            8.89            10.66
               trades-10           14.69            16.24
               pgd_at-10 unroll    11.36            11.36 (no check)

The per-epoch PGD check (PGD-10 on 256 validation windows) costs about one
standard epoch on the TCN and several on digits (whose epoch is 0.2 s).
'unroll' vs 'fori' over three runs at that load: 1.9x and 5.2x faster on
digits, 1.3x, 1.6x and 1.8x slower on the TCN (and slower to compile
there); the trainer's default is 'fori' (`adversarial.train_loop`).
"""

from __future__ import annotations

import time

from absl import app
from absl import flags
import jax
import numpy as np

from experiments.configs.train import auritus_tcn
from experiments.configs.train import digits_cnn
from tinyrobust import adversarial
from tinyrobust import train

_MODELS = flags.DEFINE_list('models', ['digits_cnn', 'auritus_tcn'],
                            'Training configs to time.')
_STEPS = flags.DEFINE_integer('steps', 10, 'PGD steps of PGD-AT and TRADES.')
_TIMED = flags.DEFINE_integer('timed_steps', 5, 'Train steps per timed run.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed rounds (best kept).')
_METHODS = flags.DEFINE_list(
    'methods', ['standard', 'fgsm_rs', 'pgd_at', 'trades', 'pgd_at_unroll'],
    "Methods timed ('standard' is always timed: the baseline); "
    "pgd_at_unroll is PGD-AT with loop='unroll'.")

CONFIGS = {'digits_cnn': (lambda: digits_cnn.get_config(), 0.1),
           'auritus_tcn': (lambda: auritus_tcn.get_config('quick'), 0.1)}


def _variants(steps: int, methods):
  """(label, adversarial settings or None) per timed method."""
  out = {'standard': ('standard', None),
         'fgsm_rs': ('fgsm_rs', {'method': 'fgsm_rs'}),
         'pgd_at': (f'pgd_at-{steps}', {'method': 'pgd_at', 'steps': steps}),
         'trades': (f'trades-{steps}', {'method': 'trades', 'steps': steps}),
         'pgd_at_unroll': (f'pgd_at-{steps} unroll', {
             'method': 'pgd_at', 'steps': steps, 'loop': 'unroll'})}
  bad = sorted(set(methods) - set(out))
  if bad:
    raise ValueError(f'--methods: unknown {bad}. Valid: {", ".join(out)}.')
  return [out['standard']] + [v for k, v in out.items()
                              if k in methods and k != 'standard']


def _setup(name: str):
  make, eps = CONFIGS[name]
  config = adversarial.canonical_config(make())
  splits = train.load_splits(config)
  config.model.num_classes = splits['train'].num_classes
  model, k = train.build_model(config)
  batch = min(int(config.train.batch_size), len(splits['train']))
  spe = max(1, len(splits['train']) // batch)
  tx = train.make_optimizer(config.train, spe)
  state = train.create_train_state(model, tx, splits['train'],
                                   jax.random.key(0))
  return config, eps, splits, model, k, batch, spe, tx, state


def _build(config, eps, adv, splits, model, k, spe, tx):
  """(jitted step, defence) of one method."""
  c = adversarial.canonical_config(config.copy_and_resolve_references())
  defence = None
  if adv is not None:
    c.train.adversarial = adversarial.default_config()
    c.train.adversarial.update({'eps': eps, **adv})
    defence = adversarial.build(c, model, splits, num_classes=k,
                                steps_per_epoch=spe)
  step = jax.jit(train.make_train_step(model, tx, num_classes=k,
                                       total_steps=spe * 10,
                                       defence=defence))
  return step, defence


def _run(step, state, batches):
  for i, (x, y) in enumerate(batches):
    state, m = step(state, x, y, jax.random.fold_in(jax.random.key(1), i))
  jax.block_until_ready(m['loss'])


def bench(name: str, steps: int, timed: int, repeats: int, methods):
  """Prints one model's table."""
  config, eps, splits, model, k, batch, spe, tx, state = _setup(name)
  tr = splits['train']
  batches = [(tr.x[i * batch:(i + 1) * batch], tr.y[i * batch:(i + 1) * batch])
             for i in range(timed)]
  built, first, check_s = {}, {}, {}
  for label, adv in _variants(steps, methods):
    step, defence = _build(config, eps, adv, splits, model, k, spe, tx)
    t0 = time.perf_counter()
    _run(step, state, batches[:1])
    first[label] = time.perf_counter() - t0
    built[label] = step
    if defence is not None and 'unroll' not in label:
      defence.epoch_check(state, {'val_pgd_accuracy': -1.0})
      t0 = time.perf_counter()
      defence.epoch_check(state, {'val_pgd_accuracy': -1.0})
      check_s[label] = time.perf_counter() - t0
  best = {label: np.inf for label in built}
  for _ in range(repeats):
    for label, step in built.items():
      t0 = time.perf_counter()
      _run(step, state, batches)
      best[label] = min(best[label], (time.perf_counter() - t0) / timed)
  std = best['standard']
  print(f'\n{name}: batch {batch}, {spe} steps/epoch, eps {eps}, '
        f'{len(tr)} train examples; best of {repeats} x {timed} steps')
  print(f'{"method":<18}{"ms/step":>9}{"x std":>7}{"check s":>9}'
        f'{"epoch s":>9}{"x std epoch":>12}{"compile s":>11}')
  for label, t in best.items():
    epoch = t * spe + check_s.get(label, 0.0)
    compile_s = max(0.0, first[label] - t)
    print(f'{label:<18}{1e3 * t:9.1f}{t / std:7.2f}'
          f'{check_s.get(label, 0.0):9.2f}{epoch:9.2f}'
          f'{epoch / (std * spe):12.2f}{compile_s:11.1f}')


def main(argv):
  del argv
  print(f'backend {jax.default_backend()}, devices {jax.device_count()}; '
        f"'auto' loop inside the step: {adversarial.train_loop('auto')}")
  _variants(_STEPS.value, _METHODS.value)
  for name in _MODELS.value:
    if name not in CONFIGS:
      raise ValueError(f'--models: unknown {name!r}. Valid: '
                       f'{", ".join(CONFIGS)}.')
  for name in _MODELS.value:
    bench(name, _STEPS.value, _TIMED.value, _REPEATS.value, _METHODS.value)


if __name__ == '__main__':
  app.run(main)
