"""Catastrophic overfitting: the detector and its warning.

FGSM training can suddenly lose all robustness to PGD within an epoch while
its FGSM and clean accuracies rise (Wong et al. 2020, "Fast is better than
free"). Adversarial runs (`tinyrobust.adversarial`) attack a fixed
validation batch with PGD after every epoch; `collapsed` reads that history.
"""

from __future__ import annotations

import math
from typing import Sequence
import warnings

from absl import logging


class CatastrophicOverfittingWarning(RuntimeWarning):
  """The run's PGD validation accuracy collapsed (see `collapsed`)."""


def collapsed(history: Sequence[float], drop: float) -> bool:
  """True when the last PGD accuracy is more than `drop` below the best
  before it.

  Args:
    history: per-epoch PGD accuracies in [0, 1], oldest first (the trainer
      passes `[best so far, this epoch]`).
    drop: the tolerated fall, a fraction in (0, 1] (0.2 = 20 points).

  Raises:
    ValueError: `drop` not in (0, 1], or a value outside [0, 1].
  """
  if isinstance(drop, bool) or not isinstance(drop, (int, float)) or \
      not 0 < drop <= 1:
    raise ValueError(f'drop must be a fraction in (0, 1], got {drop!r}.')
  h = [float(a) for a in history]
  bad = [a for a in h if not (math.isfinite(a) and 0 <= a <= 1)]
  if bad:
    raise ValueError(f'history holds accuracies in [0, 1]; got {bad[0]!r}.')
  return len(h) >= 2 and max(h[:-1]) - h[-1] > drop


def warn(accuracy: float, best: float, drop: float, method: str) -> None:
  """Logs and warns (`CatastrophicOverfittingWarning`) a collapse."""
  msg = (f'Catastrophic overfitting ({method}): PGD validation accuracy '
         f'{accuracy:.3f} is {best - accuracy:.3f} below its best {best:.3f} '
         f'(> {drop}); best.ckpt keeps the best-PGD epoch.')
  logging.warning(msg)
  warnings.warn(msg, CatastrophicOverfittingWarning, stacklevel=2)
