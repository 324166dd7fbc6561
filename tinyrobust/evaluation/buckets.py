"""The scheduler's bucket policy: which padded sizes a stage's points run in.

The scheduler (`tinyrobust.evaluation.scheduler`) gathers the points still
open into buckets: full batches of the step size, and the remainder padded
to an allowed size, so that each stage compiles for a bounded set of shapes
while wasting little work on padding. Short stages (FGSM, PGD-10) use one
or two sizes (`step / SHORT_GROWTH**k`: their compile, not their run,
dominates a first run); long ones (`LONG_STAGE_EVALS`: APGD, APGD-T, FAB-T,
Square) pad by fewer than `min_bucket` points, because their run time, not
their compile, dominates.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np


def bucket_sizes(n_open: int, step: int, *, min_bucket: int = 8,
                 multiple: int = 1, growth: float = 2) -> list[int]:
  """Bucket sizes for `n_open` points: full `step`s, then the remainder
  padded to the smallest allowed size that holds it, rounded up to
  `multiple` (the device count). Allowed sizes are `ceil(step / growth**k)`
  down to `min_bucket` for `growth > 1` (a stage compiles for at most
  `log_growth(step / min_bucket) + 1` shapes and pads at most about
  `growth`x); for `growth == 1`, every multiple of `min_bucket` and the
  `FINE_GROWTH` sizes (fewer than `min_bucket` padded points, and at most
  `FINE_GROWTH`x: for long stages, whose run time, not their compile, which
  the persistent compilation cache keeps across runs, dominates)."""
  sizes = [step] * (n_open // step)
  rest = n_open - step * len(sizes)
  if rest:
    allowed, k, ratio = [], 0, FINE_GROWTH if growth == 1 else growth
    while True:
      size = int(math.ceil(step / ratio**k - 1e-9))
      if allowed and size < min_bucket:
        break
      allowed.append(size)
      if size <= 1:
        break
      k += 1
    if growth == 1:
      allowed.append(min(step, int(math.ceil(rest / min_bucket) * min_bucket)))
    allowed = [int(math.ceil(a / multiple) * multiple) for a in allowed]
    sizes.append(min(a for a in allowed if a >= rest))
  return sizes


# Under `growth='auto'`, stages that spend at least `LONG_STAGE_EVALS` model
# evaluations per point (APGD's 100 steps, APGD-T/FAB-T's 9 targets x 100
# steps, Square's queries) pad their last bucket to a multiple of
# `min_bucket` or of `FINE_GROWTH` (`LONG_GROWTH = 1`), whichever is closer;
# shorter ones (FGSM, PGD-10) to `step / SHORT_GROWTH**k` (>= min_bucket):
# the step, or for a step >= 128 also step / 16, so a stage compiles once or
# twice. Measured (experiments/bench_study_attack.py, HAR study, FGSM and
# PGD-10 on 200 windows over 4 eps, batch 64, compilation cache off): the
# attack stage of FastGRNN took 18.4 s (16.7 s compiling) with growth 2 and
# 7.6 s (5.6 s) with 16; the TCN 24.0 s (17.6 s) and 16.4 s (7.7 s).
# Measured (experiments/bench_autoattack.py, ResNet8, vs torchattacks):
# APGD-CE-100 on 70 open points (step 128): bucket 128 (growth 2) 0.86x,
# bucket 82 (growth 1.25) 1.34x; the standard cascade on 100 images: growth
# 2 1.31x (buckets 50/25/25/25), growth 1.25 1.96x (41/14/14/14).
LONG_STAGE_EVALS = 50
LONG_GROWTH = 1
FINE_GROWTH = 1.25
SHORT_GROWTH = 16.0


def stage_evals(kernel: Callable) -> int:
  """Model evaluations per attacked point of a stage, from its `config`:
  Square's `queries`, else `steps x restarts x eot_iter` times the target
  classes of a targeted stage (1 for a kernel without a config)."""
  config = dict(getattr(kernel, 'config', None) or {})
  if 'queries' in config:
    return int(config['queries'])
  evals = int(config.get('steps', 1)) * int(config.get('restarts', 1) or 1)
  evals *= int(config.get('eot_iter', 1) or 1)
  if config.get('targeted') or config.get('loss') == 'dlr-targeted':
    evals *= int(config.get('n_target_classes', 1) or 1)
  return evals


def stage_growth(growth: float | str, kernel: Callable,
                 cheap: bool = False) -> float:
  """The bucket growth one stage uses: `growth` itself, or for 'auto'
  `SHORT_GROWTH` for short stages and `LONG_GROWTH` for long ones
  (`LONG_STAGE_EVALS`); with `cheap` (a dispatch-bound model whose steps
  run rolled, `loops.auto_for`) `SHORT_GROWTH` for every stage: padding
  costs such a model next to nothing, and each shape compiles a whole
  rolled stage (ProtoNN's standard AutoAttack compiled for 173 s with fine
  buckets under load, experiments/autoattack_table.py)."""
  if growth != 'auto':
    return float(growth)
  return LONG_GROWTH if stage_evals(kernel) >= LONG_STAGE_EVALS and \
      not cheap else SHORT_GROWTH


def buckets(idx: np.ndarray, step: int, min_bucket: int, multiple: int,
             growth: float) -> Iterator[tuple[np.ndarray, int]]:
  """(indices padded to the bucket size by repeating the first, n_valid)."""
  lo = 0
  for size in bucket_sizes(len(idx), step, min_bucket=min_bucket,
                           multiple=multiple, growth=growth):
    part = idx[lo:lo + size]
    lo += len(part)
    yield np.concatenate([part, np.repeat(part[:1], size - len(part))]), \
        len(part)
