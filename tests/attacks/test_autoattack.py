"""APGD, Square and the AutoAttack cascade on a trained digits MLP."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust import attacks
from tinyrobust.attacks import apgd
from tinyrobust.attacks import autoattack
from tinyrobust.attacks import square

EPS = 0.06


def _paper_checkpoints(steps):
  """Croce and Hein (2020), Sec. 3.1: p_0 = 0, p_1 = 0.22,
  p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06); w_j = ceil(p_j N)."""
  p = [0.0, 0.22]
  while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1.0:
    p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
  w = [int(math.ceil(round(q * steps, 9))) for q in p]
  return tuple(sorted(set(w)))  # a repeated checkpoint (short runs) is one


@pytest.mark.parametrize('steps', [10, 100, 250])
def test_apgd_checkpoints_follow_the_paper(steps):
  assert apgd.apgd_checkpoints(steps) == _paper_checkpoints(steps)


def _robust(apply_fn, v, x_adv, y):
  return np.asarray(jnp.argmax(apply_fn(v, x_adv), -1) == y)


@pytest.mark.parametrize('norm, eps', [('linf', EPS), ('l2', 0.5)])
def test_apgd_stays_in_ball_and_clip(digits_mlp, norm, eps):
  f, v, x, y = digits_mlp
  atk = attacks.get_attack('apgd-ce', f, norm=norm, steps=20, clip=(0.0, 1.0))
  x_adv = np.asarray(atk(v, x, y, jax.random.key(0), eps))
  d = (x_adv - np.asarray(x)).reshape(len(x), -1)
  size = np.abs(d).max(1) if norm == 'linf' else np.linalg.norm(d, axis=1)
  assert size.max() <= eps * (1 + 1e-5) + 1e-6
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_apgd_ce_at_least_as_strong_as_pgd(digits_mlp):
  f, v, x, y = digits_mlp
  key = jax.random.key(0)
  pgd = attacks.make_pgd(f, steps=20, clip=(0.0, 1.0))(v, x, y, key, EPS)
  ap = attacks.get_attack('apgd-ce', f, steps=20, clip=(0.0, 1.0))(
      v, x, y, key, EPS)
  r_pgd, r_apgd = _robust(f, v, pgd, y), _robust(f, v, ap, y)
  assert r_apgd.mean() <= r_pgd.mean() + 1 / len(y), (r_apgd.mean(),
                                                       r_pgd.mean())
  assert r_apgd.mean() < _robust(f, v, x, y).mean()


@jax.custom_vjp
def _no_grad(x):
  return x


def _no_grad_fwd(x):
  return x, None


def _no_grad_bwd(res, g):
  raise RuntimeError('this model has no gradient')


_no_grad.defvjp(_no_grad_fwd, _no_grad_bwd)


def test_square_needs_no_gradient_and_stays_in_ball(digits_mlp):
  f, v, x, y = digits_mlp
  g = lambda v, x: f(v, _no_grad(x))
  with pytest.raises(RuntimeError, match='no gradient'):
    jax.grad(lambda x: g(v, x).sum())(x)
  atk = attacks.get_attack('square', g, queries=200, clip=(0.0, 1.0))
  x_adv = np.asarray(atk(v, x, y, jax.random.key(0), EPS))
  assert np.abs(x_adv - np.asarray(x)).max() <= EPS + 1e-6
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  clean = _robust(f, v, x, y)
  robust = _robust(f, v, x_adv, y)
  assert robust.mean() < clean.mean() - 0.05, (robust.mean(), clean.mean())
  assert not np.any(robust & ~clean)  # never repairs a misclassified point


def test_square_p_schedule_halves_at_the_papers_iterations():
  p = [square.square_p(i, 10000, 0.8) for i in (0, 10, 11, 50, 51, 8001)]
  assert p == [0.8, 0.8, 0.4, 0.4, 0.2, 0.8 / 2 ** 9]


@pytest.mark.parametrize('side', [1, 3, 8])
def test_square_window_corners_all_vs_authors(side):
  # 'all': every corner in [0, 8 - side]; 'authors' (the authors' and
  # torchattacks' code): [0, 8 - side), so a 1x1 window never covers the
  # last row or column (and a full-side window sits at 0 either way).
  seen = {}
  for corners in square.CORNERS:
    _, starts = square._window(jax.random.key(0), 4000, (8, 8), side,
                               corners)
    seen[corners] = set(np.unique(np.asarray(starts)).tolist())
  assert seen['all'] == set(range(8 - side + 1))
  assert seen['authors'] == set(range(max(8 - side, 1)))
  with pytest.raises(ValueError, match="corners.*'edge'"):
    attacks.get_attack('square', lambda v, x: x, corners='edge')


def test_cascade_is_the_per_example_worst_case(digits_mlp):
  f, v, x, y = digits_mlp
  key = jax.random.key(0)
  kw = dict(clip=(0.0, 1.0))
  # A small budget: the property holds for any budget, and each stage's
  # host-driven programs compile per window size / bucket.
  aa = autoattack.make_autoattack(f, steps=5, queries=30, n_target_classes=2,
                                  return_info=True, **kw)
  x_aa, info = aa(v, x, y, key, EPS)
  broken = np.asarray(info['broken_by'])
  robust_aa = _robust(f, v, x_aa, y)
  assert np.all(robust_aa == (broken == -1))
  np.testing.assert_array_equal(np.asarray(x_aa)[broken == -1],
                                np.asarray(x)[broken == -1])
  assert np.all(broken[~_robust(f, v, x, y)] == 0)  # clean errors: stage 0
  singles = {'apgd-ce': attacks.get_attack('apgd-ce', f, steps=5, **kw),
             'apgd-t': attacks.get_attack('apgd-t', f, steps=5,
                                          n_target_classes=2, **kw),
             'fab-t': attacks.get_attack('fab-t', f, steps=5,
                                         n_target_classes=2, **kw),
             'square': attacks.get_attack('square', f, queries=30, **kw)}
  for name, atk in singles.items():
    r = _robust(f, v, atk(v, x, y, key, EPS), y)
    assert robust_aa.mean() <= r.mean() + 2 / len(y), name
  stages = aa.config['stages']
  assert stages == ['clean', 'apgd-ce', 'apgd-t', 'fab-t', 'square']
  assert set(np.unique(broken)) <= set(range(-1, len(stages)))


def test_evaluator_reports_each_stage_contribution(digits_mlp):
  """`evaluate_robustness` with 'autoattack': per eps, the examples each
  stage broke first add up to everything not robust (clean errors first)."""
  from tinyrobust import evaluate  # pylint: disable=g-import-not-at-top
  f, v, x, y = digits_mlp
  res = evaluate.evaluate_robustness(
      f, v, (x, y), attacks=['autoattack'], eps_grid=[0.0, EPS, 0.3],
      batch_size=64, seed=0, clip=(0.0, 1.0),
      options={'autoattack': {'steps': 5, 'queries': 20,
                              'n_target_classes': 2}})
  aa = res['attacks']['autoattack']
  n = res['num_examples']
  for p in aa['per_eps']:
    by = p['broken_by']
    assert list(by) == ['clean', 'apgd-ce', 'apgd-t', 'fab-t', 'square']
    assert by['clean'] == n - aa['clean_correct']
    assert sum(by.values()) == n - p['robust_correct']
  assert sum(aa['per_eps'][0]['broken_by'].values()) == (
      aa['per_eps'][0]['broken_by']['clean'])  # eps 0 breaks nothing new
  assert aa['per_eps'][2]['broken_by']['apgd-ce'] > 0


def test_standard_version_is_the_papers_with_its_budget_in_config():
  f = lambda v, x: x @ v
  aa = attacks.make_autoattack(f, norm='l2')
  assert [s.name for s in aa.stages] == ['apgd-ce', 'apgd-t', 'fab-t',
                                         'square']
  c = dict(aa.config)
  assert (c['version'], c['steps'], c['n_target_classes'], c['queries'],
          c['restarts'], c['eot_iter']) == ('standard', 100, 9, 5000, 1, 1)
  by_name = {s.name: dict(s.config) for s in aa.stages}
  assert by_name['apgd-ce']['steps'] == 100
  assert by_name['apgd-t']['n_target_classes'] == 9
  assert (by_name['fab-t']['steps'], by_name['fab-t']['n_target_classes'],
          by_name['fab-t']['restarts']) == (100, 9, 1)
  assert by_name['square']['queries'] == 5000
  assert all(s['norm'] == 'l2' for s in by_name.values())
  assert autoattack.autoattack_stages(f, norm='l2')[2].name == 'fab-t'


def test_rand_version_is_apgd_ce_and_dlr_with_eot_20():
  f = lambda v, x: x @ v
  aa = attacks.make_autoattack(f, version='rand')
  assert [s.name for s in aa.stages] == ['apgd-ce', 'apgd-dlr']
  assert aa.config['eot_iter'] == 20 and aa.config['version'] == 'rand'
  assert all(dict(s.config)['eot_iter'] == 20 for s in aa.stages)
  with pytest.raises(ValueError, match='version'):
    attacks.make_autoattack(f, version='plus')
  # A random model in the standard version: APGD stages take its draws,
  # FAB-T and Square the fixed draw.
  g = lambda v, x, key: x @ v
  std = attacks.make_autoattack(g, random_apply=True)
  assert [dict(s.config).get('random_apply') for s in std.stages] == [
      True, True, None, None]


def test_rand_version_runs_a_random_model_with_eot(digits_mlp):
  """A model with test-time noise: the EOT stages see its draws, the
  cascade's decisions the fixed draw key(0)."""
  f, v, x, y = digits_mlp
  x, y = x[:64], y[:64]

  def noisy(v, xs, key):
    return f(v, xs + 0.01 * jax.random.normal(key, xs.shape))

  aa = attacks.make_autoattack(noisy, version='rand', random_apply=True,
                               steps=5, eot_iter=2, clip=(0.0, 1.0),
                               return_info=True)
  x_aa, info = aa(v, x, y, jax.random.key(0), EPS)
  fixed = lambda v, xs: noisy(v, xs, jax.random.key(0))
  robust = _robust(fixed, v, x_aa, y)
  assert np.all(robust == (np.asarray(info['broken_by']) == -1))
  assert robust.mean() < _robust(fixed, v, x, y).mean()
  assert np.abs(np.asarray(x_aa) - np.asarray(x)).max() <= EPS + 1e-6


def test_stages_run_one_after_another_give_the_cascade(digits_mlp):
  """The stage records, each run on the whole batch with the cascade's
  keys and kept per example at the first success, reproduce the cascade."""
  f, v, x, y = digits_mlp
  kw = dict(attacks=['fab-t', 'apgd-ce'], steps=5, n_target_classes=2,
            clip=(0.0, 1.0))
  aa = attacks.make_autoattack(f, return_info=True, **kw)
  assert [s.name for s in aa.stages] == kw['attacks']
  key = jax.random.key(2)
  x_aa, info = aa(v, x, y, key, EPS)
  broken = ~_robust(f, v, x, y)
  x_out = np.asarray(x).copy()
  by = np.where(broken, 0, -1)
  for i, (stage, k) in enumerate(zip(aa.stages, jax.random.split(key, 2))):
    x_i = np.asarray(stage(v, x, y, k, EPS))
    new = ~_robust(f, v, x_i, y) & ~broken
    x_out[new], by[new] = x_i[new], i + 1
    broken |= new
  np.testing.assert_array_equal(np.asarray(info['broken_by']), by)
  np.testing.assert_array_equal(np.asarray(x_aa), x_out)
  assert 1 in set(by)  # FAB-T, the first stage, broke points within eps


def test_stage_needing_more_classes_is_skipped_with_a_warning():
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
  f = lambda v, x: x @ v
  x = jnp.asarray(rng.uniform(size=(8, 6)), jnp.float32)
  y = jnp.argmax(f(w, x), -1).astype(jnp.int32)
  aa = attacks.make_autoattack(f, attacks=['apgd-t', 'fab-t'], steps=3,
                               clip=(0.0, 1.0), return_info=True)
  with pytest.warns(UserWarning, match='apgd-t skipped'):
    np.testing.assert_array_equal(
        np.asarray(aa.stages[0](w, x, y, jax.random.key(0), 0.5)),
        np.asarray(x))
  with pytest.warns(UserWarning, match='apgd-t skipped'):
    _, info = aa(w, x, y, jax.random.key(0), 0.5)
  assert not np.any(np.asarray(info['broken_by']) == 1)
