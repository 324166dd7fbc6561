"""The GP designer: beats random search, spreads batches, handles penalties."""

import math

import numpy as np
import pytest

from tinyrobust.nas import designer as designer_lib
from tinyrobust.nas import objective
from tests.nas import synthetic

BUDGET = 30
TOL = 1.0  # f <= 1 is a ball of radius 1 around the optimum


def _evals_to_reach(d, bowl, budget=BUDGET, tol=TOL):
  """Evaluations until f <= tol (budget + 1 if never)."""
  for n in range(1, budget + 1):
    (params,) = d.suggest(1)
    out = bowl(params, d.last_ids[0])
    d.update([{'trial': d.last_ids[0], 'params': params, **out}])
    if out['metrics']['value'] <= tol:
      return n
  return budget + 1


def test_gp_reaches_known_optimum_faster_than_random():
  bowl = synthetic.QuadraticBowl()
  space = bowl.space()
  ranges = objective.weight_ranges(synthetic.ERROR_ONLY, 0.0)
  gp, rnd = [], []
  for seed in range(3):
    gp.append(_evals_to_reach(designer_lib.GPDesigner(
        space, weight_ranges=ranges, seed=seed, n_initial_points=5), bowl))
    rnd.append(_evals_to_reach(designer_lib.RandomDesigner(
        space, weight_ranges=ranges, seed=seed), bowl))
  print('evaluations to reach f <= 1: gp', gp, 'random', rnd)
  assert np.median(gp) < np.median(rnd)
  assert np.median(gp) <= BUDGET  # the GP actually gets there


def _observe(d, bowl, n):
  for params, tid in zip(d.suggest(n), d.last_ids):
    d.update([{'trial': tid, 'params': params, **bowl(params, tid)}])


def test_batch_uses_one_scalarization_per_suggestion_and_is_deterministic():
  bowl = synthetic.QuadraticBowl()
  ranges = objective.weight_ranges(objective.preset('study'), 0.5)

  def run(seed):
    d = designer_lib.GPDesigner(bowl.space(), weight_ranges=ranges, seed=seed,
                                n_initial_points=4, n_acq_points=500)
    _observe(d, bowl, 6)
    batch = d.suggest(4)
    return d, batch

  d, batch = run(0)
  assert d.last_ids == [6, 7, 8, 9]
  assert len({w['adversarial'] for w in d.last_weights}) == 4
  for w in d.last_weights:
    for k, (lo, hi) in ranges.items():
      assert lo <= w[k] <= hi
  keys = {tuple(sorted(p.items())) for p in batch}
  assert len(keys) == 4  # liar + different weights: no repeated point
  assert len(d.pending) == 4
  d2, batch2 = run(0)
  assert batch2 == batch and d2.last_weights == d.last_weights


def test_infeasible_and_failed_get_a_penalty_above_the_worst():
  bowl = synthetic.QuadraticBowl(bytes_per_k=1000.0, flash_max=8000.0)
  d = designer_lib.GPDesigner(
      bowl.space(), weight_ranges=objective.weight_ranges(
          synthetic.ERROR_ONLY, 0.0), seed=0, n_initial_points=3)
  for params in d.space.sample(12, seed=3):
    tid = d.next_index
    d.add_pending(tid, params)
    d.update([{'trial': tid, 'params': params, **bowl(params, tid)}])
  d.update([{'trial': 99, 'params': d.space.sample(1, seed=9)[0],
             'status': 'failed', 'terms': None}])
  statuses = [o['status'] for o in d.observations.values()]
  assert 'infeasible' in statuses and statuses.count('ok') >= 2
  _, ys = d.scores(synthetic.ERROR_ONLY)
  ok = [y for y, st in zip(ys, statuses) if st == 'ok']
  bad = [y for y, st in zip(ys, statuses) if st != 'ok']
  assert all(math.isfinite(y) for y in ys)
  assert min(bad) == max(bad) > max(ok)
  assert min(bad) == pytest.approx(max(ok) + (max(ok) - min(ok)))
  # GP suggestions after many infeasible points fall in the feasible part.
  for params in d.suggest(3):
    assert bowl(params, 0)['status'] == 'ok'


def test_bad_options_raise():
  space = synthetic.QuadraticBowl().space()
  r = objective.weight_ranges(synthetic.ERROR_ONLY, 0.0)
  with pytest.raises(ValueError, match='kappa'):
    designer_lib.GPDesigner(space, weight_ranges=r, kappa=-1)
  with pytest.raises(ValueError, match='liar'):
    designer_lib.GPDesigner(space, weight_ranges=r, liar='cl_median')
  with pytest.raises(ValueError, match='Unknown designer'):
    designer_lib.make_designer('tpe', space)
  with pytest.raises(ValueError, match='n >= 1'):
    designer_lib.RandomDesigner(space).suggest(0)
