"""The search objective of the study (Sec. 4), its presets and random scalarization.

    f = l1*error + l2*flash_term + l3*sram_term + l4*latency_term
        + l5*adversarial_error                               (minimised)

with, for a board with `flash_max` / `sram_max` bytes and a FLOPs target:

    error             = 1 - validation accuracy
    flash_term        = -flash / flash_max     (+inf when flash > flash_max)
    sram_term         = -sram / sram_max       (+inf when sram > sram_max)
    latency_term      = flops / flops_target
    adversarial_error = 1 - FGSM consistency on the validation split

The five terms are kept separately in every trial record; a scalar is only
formed when a designer needs one, under that suggestion's weights (random
scalarization). `PRESETS['study']` are the original code's weights
(`score = -err + 0.01*(ram/ram_max + flash/flash_max) - 0.05*flops/30e6
- 0.5*(1-adv_acc)`, maximised, i.e. l = (1, 0.01, 0.01, 0.05, 0.5) here);
`'study_noadv'` is the same with l5 = 0 (the study's "no adversarial term"
arm of Table 2).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

TERMS = ('error', 'flash', 'sram', 'latency', 'adversarial')
TERM_KEYS = {'error': 'error', 'flash': 'flash_term', 'sram': 'sram_term',
             'latency': 'latency_term', 'adversarial': 'adversarial_error'}
STUDY_FLOPS_TARGET = 30e6

PRESETS: dict[str, dict[str, float]] = {
    'study': {'error': 1.0, 'flash': 0.01, 'sram': 0.01, 'latency': 0.05,
              'adversarial': 0.5},
    'study_noadv': {'error': 1.0, 'flash': 0.01, 'sram': 0.01,
                    'latency': 0.05, 'adversarial': 0.0},
}


def check_weights(weights: Mapping[str, float]) -> dict[str, float]:
  """Validates a full set of five finite weights keyed by `TERMS`."""
  bad = sorted(set(weights) ^ set(TERMS))
  if bad:
    raise ValueError(f'Objective weights must have exactly the keys {TERMS}, '
                     f'got {sorted(weights)}.')
  out = {k: float(weights[k]) for k in TERMS}
  for k, v in out.items():
    if not math.isfinite(v):
      raise ValueError(f'Objective weight {k!r} must be finite, got {v}.')
  return out


def preset(name: str) -> dict[str, float]:
  if name not in PRESETS:
    raise ValueError(f'Unknown objective preset {name!r}. Valid: '
                     f'{", ".join(PRESETS)}.')
  return dict(PRESETS[name])


def weight_ranges(weights: Mapping[str, float], spread: float,
                  explicit: Mapping[str, Any] | None = None
                  ) -> dict[str, tuple[float, float]]:
  """Ranges the per-suggestion weights are drawn from.

  Args:
    weights: central weights (keys `TERMS`).
    spread: relative half-width; term k is drawn from
      `[w_k (1 - spread), w_k (1 + spread)]`. 0 disables scalarization noise.
    explicit: optional `{term: (lo, hi)}` overriding single terms.

  Returns:
    `{term: (lo, hi)}` with lo <= hi.
  """
  weights = check_weights(weights)
  if not 0.0 <= spread <= 1.0:
    raise ValueError(f'weight spread must be in [0, 1], got {spread}.')
  out = {k: (w * (1 - spread), w * (1 + spread)) for k, w in weights.items()}
  for k, r in dict(explicit or {}).items():
    if k not in TERMS:
      raise ValueError(f'Unknown weight range {k!r}. Valid: {TERMS}.')
    lo, hi = (float(v) for v in r)
    if not lo <= hi:
      raise ValueError(f'Weight range {k!r} must have lo <= hi, got {r}.')
    out[k] = (lo, hi)
  return {k: (min(lo, hi), max(lo, hi)) for k, (lo, hi) in out.items()}


def draw_weights(ranges: Mapping[str, tuple[float, float]],
                 rng: np.random.Generator) -> dict[str, float]:
  """One random scalarization: each weight uniform in its range."""
  return {k: float(rng.uniform(*ranges[k])) for k in TERMS}


def terms(*, val_accuracy: float | None, flash_bytes: float,
          sram_bytes: float, flops: float, fgsm_consistency: float | None,
          flash_max: float, sram_max: float,
          flops_target: float = STUDY_FLOPS_TARGET) -> dict[str, float]:
  """The five objective terms (see the module docstring) of one candidate.

  Args:
    val_accuracy: validation accuracy in [0, 1]; None before training
      (error is then NaN).
    flash_bytes, sram_bytes: candidate's flash and SRAM, bytes.
    flops: FLOPs of one inference (batch 1).
    fgsm_consistency: fraction of validation predictions unchanged by FGSM;
      None when not measured (term NaN).
    flash_max, sram_max: board budgets, bytes.
    flops_target: FLOPs normalising the latency term.

  Returns:
    `{'error', 'flash_term', 'sram_term', 'latency_term',
    'adversarial_error'}`; flash/sram terms are +inf over budget.
  """
  if flash_max <= 0 or sram_max <= 0 or flops_target <= 0:
    raise ValueError(f'flash_max, sram_max and flops_target must be > 0, got '
                     f'{flash_max}, {sram_max}, {flops_target}.')
  nan = float('nan')
  return {
      'error': nan if val_accuracy is None else 1.0 - float(val_accuracy),
      'flash_term': (math.inf if flash_bytes > flash_max
                     else -float(flash_bytes) / flash_max),
      'sram_term': (math.inf if sram_bytes > sram_max
                    else -float(sram_bytes) / sram_max),
      'latency_term': float(flops) / flops_target,
      'adversarial_error': (nan if fgsm_consistency is None
                            else 1.0 - float(fgsm_consistency)),
  }


def feasible(term_values: Mapping[str, float]) -> bool:
  """True when the candidate fits the board (finite flash and SRAM terms)."""
  return bool(math.isfinite(float(term_values['flash_term'])) and
              math.isfinite(float(term_values['sram_term'])))


def scalarize(term_values: Mapping[str, float],
              weights: Mapping[str, float]) -> float:
  """`sum_k w_k * term_k`; a zero weight ignores its term even if NaN/inf."""
  total = 0.0
  for k in TERMS:
    w = float(weights[k])
    if w == 0.0:
      continue
    total += w * float(term_values[TERM_KEYS[k]])
  return total
