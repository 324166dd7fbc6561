"""The SPEC objective, its study preset and scalarization."""

import math

import numpy as np
import pytest

from tinyrobust.nas import objective


def test_study_preset_reproduces_original_score():
  # Original code (maximised): score = -err + 0.01*(ram/ram_max +
  # flash/flash_max) - 0.05*flops/30e6 - 0.5*(1-adv_acc).
  err, ram, flash, flops, adv = 0.1, 50e3, 200e3, 12e6, 0.3
  ram_max, flash_max = 128e3, 512e3
  t = objective.terms(val_accuracy=1 - err, flash_bytes=flash, sram_bytes=ram,
                      flops=flops, fgsm_consistency=adv, flash_max=flash_max,
                      sram_max=ram_max)
  score = (-err + 0.01 * (ram / ram_max + flash / flash_max)
           - 0.05 * flops / 30e6 - 0.5 * (1 - adv))
  f = objective.scalarize(t, objective.preset('study'))
  assert f == pytest.approx(-score)
  noadv = objective.scalarize(t, objective.preset('study_noadv'))
  assert noadv == pytest.approx(-score - 0.5 * (1 - adv))


def test_terms_infeasible_and_nan_handling():
  t = objective.terms(val_accuracy=None, flash_bytes=600e3, sram_bytes=10,
                      flops=1, fgsm_consistency=None, flash_max=512e3,
                      sram_max=128e3)
  assert t['flash_term'] == math.inf and t['sram_term'] < 0
  assert not objective.feasible(t)
  assert math.isnan(t['error'])
  ok = objective.terms(val_accuracy=0.5, flash_bytes=1, sram_bytes=1, flops=1,
                       fgsm_consistency=None, flash_max=2, sram_max=2)
  assert objective.feasible(ok)
  # A zero adversarial weight ignores a missing (NaN) adversarial term.
  assert math.isfinite(objective.scalarize(ok, objective.preset(
      'study_noadv')))
  assert math.isnan(objective.scalarize(ok, objective.preset('study')))


def test_weight_ranges_and_draws():
  w = objective.preset('study')
  r = objective.weight_ranges(w, 0.5, {'adversarial': (0.0, 1.0)})
  assert r['error'] == (0.5, 1.5) and r['adversarial'] == (0.0, 1.0)
  rng = np.random.default_rng(0)
  draws = [objective.draw_weights(r, rng) for _ in range(50)]
  for k, (lo, hi) in r.items():
    vals = [d[k] for d in draws]
    assert lo <= min(vals) and max(vals) <= hi
  assert len({d['adversarial'] for d in draws}) == 50
  with pytest.raises(ValueError, match='spread'):
    objective.weight_ranges(w, 2.0)
  with pytest.raises(ValueError, match='exactly the keys'):
    objective.check_weights({'error': 1.0})
  with pytest.raises(ValueError, match='Unknown objective preset'):
    objective.preset('mango')
