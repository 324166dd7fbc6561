"""FAB / FAB-T: the boundary projection against an LP and a bisection, and
the minimal adversarial distance of linear models in closed form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust import attacks
from tinyrobust.attacks import fab

B, D, K = 12, 16, 5


def _linear(v, x):
  return x @ v['w'] + v['b']


@pytest.fixture(scope='module')
def linear():
  """(variables, x [B, D] in [0.4, 0.6], y = the model's prediction)."""
  rng = np.random.default_rng(0)
  v = {'w': jnp.asarray(rng.normal(size=(D, K)) * 0.3, jnp.float32),
       'b': jnp.asarray(rng.normal(size=(K,)) * 0.1, jnp.float32)}
  x = jnp.asarray(rng.uniform(0.4, 0.6, size=(B, D)), jnp.float32)
  return v, x, jnp.argmax(_linear(v, x), -1).astype(jnp.int32)


def _distances(v, x, y, norm):
  """`[B, K]` distance from x to each boundary {f_k = f_y} (inf at k = y):
  `|f_y - f_k| / ||w_y - w_k||_dual`, dual L1 for L-inf and L2 for L2."""
  w, b = np.asarray(v['w'], np.float64), np.asarray(v['b'], np.float64)
  x, y = np.asarray(x, np.float64), np.asarray(y)
  out = np.full((len(x), K), np.inf)
  for i in range(len(x)):
    for k in range(K):
      if k != y[i]:
        wd = w[:, y[i]] - w[:, k]
        dual = np.abs(wd).sum() if norm == 'linf' else np.linalg.norm(wd)
        out[i, k] = abs(x[i] @ wd + b[y[i]] - b[k]) / dual
  return out


def _size(d, norm):
  d = np.asarray(d, np.float64).reshape(len(d), -1)
  return np.abs(d).max(1) if norm == 'linf' else np.linalg.norm(d, axis=1)


def _lp_linf(t, w, b, lo, hi):
  """min ||d||_inf s.t. <w, t + d> = b, lo <= t + d <= hi, by scipy's LP."""
  optimize = pytest.importorskip('scipy.optimize')
  n = len(t)
  cost = np.r_[np.zeros(n), 1.0]
  a_ub = np.block([[np.eye(n), -np.ones((n, 1))],
                   [-np.eye(n), -np.ones((n, 1))]])
  res = optimize.linprog(cost, A_ub=a_ub, b_ub=np.zeros(2 * n),
                         A_eq=np.r_[w, 0.0][None], b_eq=[b - w @ t],
                         bounds=[(l, h) for l, h in zip(lo - t, hi - t)]
                         + [(0, None)], method='highs')
  return res.fun if res.status == 0 else None


def _bisect_l2(t, w, b, lo, hi):
  """The L2 projection from the KKT form d = clip(-mu w, lo - t, hi - t),
  mu by bisection (<w, d(mu)> is nonincreasing in mu)."""
  d = lambda mu: np.clip(-mu * w, lo - t, hi - t)
  target = b - w @ t
  a, z = -1e6, 1e6
  for _ in range(200):
    m = 0.5 * (a + z)
    a, z = (a, m) if w @ d(m) <= target else (m, z)
  return d(0.5 * (a + z))


@pytest.mark.parametrize('norm', ['linf', 'l2'])
def test_projection_is_the_exact_box_constrained_projection(norm):
  rng = np.random.default_rng(1)
  n, dim = 40, 12
  t = rng.uniform(0, 1, (n, dim))
  w = rng.normal(size=(n, dim)) * (rng.uniform(size=(n, dim)) > 0.2)
  # Offsets from a small move (box hardly binds) to beyond the box corner.
  b = (w * t).sum(1) + rng.normal(size=n) * np.abs(w).sum(1) * np.r_[
      np.full(n // 2, 0.05), np.full(n - n // 2, 0.6)]
  lo, hi = np.zeros(dim), np.ones(dim)
  d = np.asarray(fab.boundary_projection(
      jnp.asarray(t, jnp.float32), jnp.asarray(w, jnp.float32),
      jnp.asarray(b, jnp.float32), norm, jnp.zeros(dim), jnp.ones(dim)),
                 np.float64)
  assert np.all(t + d >= -1e-6) and np.all(t + d <= 1 + 1e-6)
  reached = 0
  for i in range(n):
    corner = np.where(w[i] * np.sign(w[i] @ t[i] - b[i]) > 0, -t[i],
                      1 - t[i]) * (w[i] != 0)
    if (w[i] @ t[i] - b[i]) * (w[i] @ (t[i] + corner) - b[i]) > 0:  # the box does not reach the plane: go to the corner
      np.testing.assert_allclose(d[i], corner, atol=1e-5)
      continue
    reached += 1
    assert abs(w[i] @ (t[i] + d[i]) - b[i]) < 1e-4 * np.abs(w[i]).sum()
    if norm == 'linf':
      np.testing.assert_allclose(np.abs(d[i]).max(),
                                 _lp_linf(t[i], w[i], b[i], lo, hi),
                                 rtol=1e-4, atol=1e-6)
    else:
      np.testing.assert_allclose(d[i], _bisect_l2(t[i], w[i], b[i], lo, hi),
                                 rtol=1e-4, atol=1e-5)
  assert 10 <= reached < n  # both cases were exercised


@pytest.mark.parametrize('norm, clip', [('linf', None), ('linf', (0.0, 1.0)),
                                        ('l2', None), ('l2', (0.0, 1.0))])
def test_fab_finds_the_closed_form_minimum(linear, norm, clip):
  v, x, y = linear
  r = _distances(v, x, y, norm).min(1)
  atk = attacks.get_attack('fab', _linear, norm=norm, clip=clip,
                           return_info=True)
  x_adv, info = atk(v, x, y, jax.random.key(0), 10.0)
  size = _size(x_adv - x, norm)
  assert np.all(size >= r * (1 - 1e-5)) and np.all(size <= r * 1.01), (
      size / r)
  np.testing.assert_allclose(np.asarray(info['distance']), size, rtol=1e-5)
  assert np.all(np.asarray(info['success']))
  if clip is not None:
    assert np.asarray(x_adv).min() >= 0.0 and np.asarray(x_adv).max() <= 1.0


def test_fab_minimises_the_scaled_norm(linear):
  """With eps_scale s the L-inf ball is |d_i| <= eps s_i: the minimal
  distance is |f_y - f_k| / ||(w_y - w_k) * s||_1."""
  v, x, y = linear
  s = np.linspace(0.5, 2.0, D).astype(np.float32)
  r = _distances({'w': v['w'] * s[:, None], 'b': v['b']}, x / s, y,
                 'linf').min(1)
  atk = attacks.get_attack('fab', _linear, norm='linf', eps_scale=s,
                           steps=60)
  x_adv = atk(v, x, y, jax.random.key(0), 10.0)
  size = _size((x_adv - x) / s, 'linf')
  assert np.all(size >= r * (1 - 1e-5)) and np.all(size <= r * 1.01), (
      size / r)


@pytest.mark.parametrize('norm', ['linf', 'l2'])
def test_fab_t_reaches_the_first_target_boundary(linear, norm):
  """FAB-T keeps the first target that succeeds: the runner-up class on the
  clean input, at the distance to the boundary {f_t = f_y} (where no third
  class overtakes y on the way there)."""
  v, x, y = linear
  dist = _distances(v, x, y, norm)
  logits = np.asarray(_linear(v, x))
  t1 = np.argsort(-logits, 1)[:, 1]
  # Examples whose projection onto {f_t1 = f_y} has y, t1 on top.
  w, bb = np.asarray(v['w']), np.asarray(v['b'])
  clean = []
  for i in range(B):
    wd = w[:, y[i]] - w[:, t1[i]]
    m = logits[i, y[i]] - logits[i, t1[i]]
    z = (np.asarray(x[i]) - (m / np.abs(wd).sum()) * np.sign(wd)
         if norm == 'linf' else np.asarray(x[i]) - m * wd / (wd @ wd))
    lz = z @ w + bb
    clean.append(np.all(np.delete(lz, [y[i], t1[i]]) < lz[y[i]] - 1e-4))
  clean = np.array(clean)
  assert clean.sum() >= B // 2
  atk = attacks.get_attack('fab-t', _linear, norm=norm, clip=(0.0, 1.0),
                           n_target_classes=K - 1)
  x_adv = atk(v, x, y, jax.random.key(0), 10.0)
  size = _size(x_adv - x, norm)
  expect = dist[np.arange(B), t1]
  assert np.all(np.argmax(_linear(v, x_adv), -1) != y)
  assert np.all(size >= dist.min(1) * (1 - 1e-5))
  ratio = size[clean] / expect[clean]
  assert np.all(ratio >= 1 - 1e-5) and np.all(ratio <= 1.01), ratio


@pytest.mark.parametrize('name', ['fab', 'fab-t'])
def test_success_only_within_eps_and_eps_zero_is_identity(linear, name):
  v, x, y = linear
  norm = 'l2'
  r = _distances(v, x, y, norm).min(1)
  atk = attacks.get_attack(name, _linear, norm=norm, clip=(0.0, 1.0),
                           steps=30)
  key = jax.random.key(0)
  below = np.asarray(atk(v, x, y, key, jnp.asarray(0.99 * r, jnp.float32)))
  np.testing.assert_array_equal(below, np.asarray(x))   # nothing within eps
  above = atk(v, x, y, key, jnp.asarray(1.02 * r, jnp.float32))
  assert np.all(np.argmax(_linear(v, above), -1) != y)
  assert np.all(_size(above - x, norm) <= 1.02 * r * (1 + 1e-6))
  zero = atk(v, x, y, key, jnp.zeros(B, jnp.float32))
  np.testing.assert_array_equal(np.asarray(zero), np.asarray(x))


def test_jit_and_vmap_over_eps_match_single_calls(linear):
  v, x, y = linear
  # Rolled steps: an unrolled FAB step (50 bisection halvings) under jit
  # and vmap compiled for over a minute; host vs fori is tested below.
  atk = attacks.get_attack('fab-t', _linear, norm='linf', clip=(0.0, 1.0),
                           steps=10, n_target_classes=2, loop='fori')
  key = jax.random.key(3)
  r = _distances(v, x, y, 'linf').min(1)
  grid = jnp.asarray([0.0, float(np.median(r)), 10.0], jnp.float32)
  sweep = jax.jit(jax.vmap(atk, in_axes=(None, None, None, None, 0)))
  out = np.asarray(sweep(v, x, y, key, grid))
  for i, e in enumerate(np.asarray(grid)):
    single = np.asarray(atk(v, x, y, key, e))
    np.testing.assert_allclose(out[i], single, atol=1e-6)
    assert np.all(_size(out[i] - x, 'linf') <= e * (1 + 1e-6))
  np.testing.assert_array_equal(out[0], np.asarray(x))
  broken = (np.argmax(_linear(v, out[1]), -1) != y)
  assert 0 < broken.sum() < B  # about half the points lie within the median


def test_misclassified_points_come_back_unchanged(linear):
  v, x, y = linear
  y_wrong = (y + 1) % K
  atk = attacks.get_attack('fab', _linear, norm='l2', steps=5)
  np.testing.assert_array_equal(
      np.asarray(atk(v, x, y_wrong, jax.random.key(0), 1.0)), np.asarray(x))


@pytest.mark.parametrize('option, value', [
    ('steps', 0), ('restarts', 1.5), ('n_target_classes', 0),
    ('alpha_max', 1.5), ('eta', 0.5), ('beta', 0.0), ('targeted', 'yes'),
    ('norm', 'l1')])
def test_bad_options_raise(option, value):
  with pytest.raises(ValueError, match=option if option != 'norm' else 'l1'):
    fab.make_fab(_linear, **{option: value})


def test_registered_with_config():
  atk = attacks.get_attack('fab-t', _linear, norm='l2')
  assert atk.name == 'fab-t'
  assert dict(atk.config) == dict(
      norm='l2', targeted=True, steps=100, restarts=1, alpha_max=0.1,
      eta=1.05, beta=0.9, clip=None, eps_scale=None, n_target_classes=9,
      loop='auto', chunk=None)
  assert attacks.get_attack('fab', _linear).name == 'fab'


def test_host_and_fori_loops_give_identical_outputs(linear):
  v, x, y = linear
  r = _distances(v, x, y, 'l2').min(1)
  eps = jnp.asarray(np.where(np.arange(B) % 2, 2 * r, 0.5 * r), jnp.float32)
  out = {}
  for loop in ('host', 'fori'):
    atk = attacks.get_attack('fab-t', _linear, norm='l2', clip=(0.0, 1.0),
                             steps=7, n_target_classes=2, restarts=2,
                             loop=loop, chunk=3, return_info=True)
    out[loop] = atk(v, x, y, jax.random.key(1), eps)
  # Same steps, same keys; XLA may fuse the two programs differently, so
  # the floats agree to rounding (1 ulp seen) and the outcomes exactly.
  np.testing.assert_allclose(np.asarray(out['host'][0]),
                             np.asarray(out['fori'][0]), rtol=1e-6, atol=0)
  np.testing.assert_allclose(np.asarray(out['host'][1]['distance']),
                             np.asarray(out['fori'][1]['distance']),
                             rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(out['host'][1]['success']),
                                np.asarray(out['fori'][1]['success']))
  assert np.asarray(out['host'][1]['success']).any()
