"""Property, closed-form and reference tests for the FGSM / PGD kernels."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust import attacks

B, D, K = 6, 10, 4
KEY = jax.random.key(0)


def _linear_vars(seed=0):
  rng = np.random.default_rng(seed)
  return {'w': jnp.asarray(rng.normal(size=(D, K)), jnp.float32),
          'b': jnp.asarray(rng.normal(size=(K,)), jnp.float32)}


def linear_apply(v, x):
  return x.reshape(x.shape[0], -1) @ v['w'] + v['b']


def _mlp_vars(seed=1, hidden=16):
  rng = np.random.default_rng(seed)
  return {'w1': jnp.asarray(rng.normal(size=(D, hidden)) / 3, jnp.float32),
          'b1': jnp.asarray(rng.normal(size=(hidden,)), jnp.float32),
          'w2': jnp.asarray(rng.normal(size=(hidden, K)), jnp.float32)}


def mlp_apply(v, x):
  h = jnp.tanh(x.reshape(x.shape[0], -1) @ v['w1'] + v['b1'])
  return h @ v['w2']


def _data(seed=2, shape=(B, D)):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.uniform(0.0, 1.0, size=shape), jnp.float32)
  y = jnp.asarray(rng.integers(0, K, size=shape[0]), jnp.int32)
  return x, y


@pytest.mark.parametrize('norm,loss', [('linf', 'ce'), ('linf', 'mse'),
                                       ('l2', 'margin'), ('l2', 'ce')])
def test_stays_in_eps_ball_and_clip_and_eps_zero_is_identity(norm, loss):
  x, y = _data()
  x = x.at[0, 0].set(1.5)  # outside clip: eps=0 must still return x exactly
  eps = jnp.asarray([0.0, 0.01, 0.05, 0.2, 0.0, 2.0], jnp.float32)
  attack = attacks.make_pgd(mlp_apply, norm=norm, loss=loss, steps=3,
                            clip=(0.0, 1.0))
  x_adv = np.asarray(attack(_mlp_vars(), x, y, KEY, eps))
  chex.assert_shape(x_adv, x.shape)
  d = x_adv - np.asarray(x)
  n = (np.abs(d).max(1) if norm == 'linf' else np.sqrt((d ** 2).sum(1)))
  assert np.all(n <= np.asarray(eps) + 1e-6), (n, eps)
  moved = np.asarray(eps) > 0
  assert np.all(x_adv[moved] >= 0.0) and np.all(x_adv[moved] <= 1.0)
  np.testing.assert_array_equal(x_adv[~moved], np.asarray(x)[~moved])
  assert n[3] > 0.0  # the attack actually moved


def test_fgsm_scalar_eps_zero_is_identity():
  x, y = _data()
  x = x.at[0, 0].set(-0.5)
  attack = attacks.make_fgsm(mlp_apply, clip=(0.0, 1.0))
  np.testing.assert_array_equal(attack(_mlp_vars(), x, y, KEY, 0.0), x)


def test_fgsm_linear_softmax_closed_form():
  v = _linear_vars()
  x, y = _data()
  eps = 0.1
  w, b = np.asarray(v['w'], np.float64), np.asarray(v['b'], np.float64)
  z = np.asarray(x, np.float64) @ w + b
  p = np.exp(z - z.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  # d CE / dx = W (p - onehot(y)) for a linear softmax model.
  grad = (p - np.eye(K)[np.asarray(y)]) @ w.T
  expected = np.clip(np.asarray(x) + eps * np.sign(grad), 0.0, 1.0)
  x_adv = attacks.make_fgsm(linear_apply, clip=(0.0, 1.0))(v, x, y, KEY, eps)
  np.testing.assert_allclose(x_adv, expected, atol=1e-6)
  # L2: the step is eps * g / ||g|| per example.
  g2 = grad / np.linalg.norm(grad, axis=1, keepdims=True)
  x_adv2 = attacks.make_fgsm(linear_apply, norm='l2')(v, x, y, KEY, eps)
  np.testing.assert_allclose(x_adv2, np.asarray(x) + eps * g2, atol=1e-6)


@pytest.mark.parametrize('norm,targeted', [('linf', False), ('l2', True)])
def test_pgd_one_step_equals_fgsm(norm, targeted):
  x, y = _data()
  eps = 0.07
  kw = dict(norm=norm, targeted=targeted, clip=(0.0, 1.0))
  fgsm = attacks.make_fgsm(mlp_apply, **kw)
  pgd = attacks.make_pgd(mlp_apply, steps=1, step_size=eps,
                         random_start=False, **kw)
  np.testing.assert_allclose(pgd(_mlp_vars(), x, y, KEY, eps),
                             fgsm(_mlp_vars(), x, y, KEY, eps), atol=1e-7)
  assert fgsm.kind == 'fgsm' and pgd.kind == 'pgd'


@pytest.mark.parametrize('loss', ['ce', 'margin'])
def test_targeted_raises_target_logit(loss):
  v = _linear_vars()
  x, _ = _data()
  z0 = np.asarray(linear_apply(v, x))
  target = jnp.asarray(np.argmin(z0, axis=1), jnp.int32)  # least likely class
  attack = attacks.make_pgd(linear_apply, steps=5, loss=loss, targeted=True,
                            random_start=False)
  z1 = np.asarray(linear_apply(v, attack(v, x, target, KEY, 0.1)))
  t = np.asarray(target)
  rows = np.arange(B)
  assert np.all(z1[rows, t] > z0[rows, t])
  # ... and relative to the other classes, per example.
  others0 = np.where(np.eye(K, dtype=bool)[t], -np.inf, z0).max(1)
  others1 = np.where(np.eye(K, dtype=bool)[t], -np.inf, z1).max(1)
  assert np.all(z1[rows, t] - others1 > z0[rows, t] - others0)
  # With a large budget the target is reached.
  x_big, info = attacks.make_pgd(linear_apply, steps=20, loss=loss,
                                 targeted=True, return_info=True)(
                                     v, x, target, KEY, 5.0)
  assert np.all(np.asarray(info['success']))
  assert np.all(np.asarray(info['prediction']) == t)


def _reference_pgd(apply_fn, v, x, y, eps, *, norm, loss, steps, rel_step,
                   clip, targeted):
  """A plain per-example loop: one example, one step at a time, in NumPy."""
  loss_fn = attacks.get_loss(loss)

  def single_loss(xi, yi):
    return loss_fn(apply_fn(v, xi[None]), yi[None])[0]

  grad = jax.jit(jax.grad(single_loss))
  out = []
  for i in range(x.shape[0]):
    x0 = np.asarray(x[i], np.float32)
    xi = x0.copy()
    e = float(eps[i])
    for _ in range(steps):
      g = np.asarray(grad(jnp.asarray(xi), y[i]), np.float32)
      if targeted:
        g = -g
      if norm == 'linf':
        xi = xi + rel_step * e * np.sign(g)
        xi = x0 + np.clip(xi - x0, -e, e)
      else:
        gn = np.linalg.norm(g)
        xi = xi + rel_step * e * (g / gn if gn > 0 else 0.0 * g)
        d = xi - x0
        dn = np.linalg.norm(d)
        xi = x0 + (d * (e / dn) if dn > e else d)
      if clip is not None:
        xi = np.clip(xi, *clip)
    out.append(xi if e > 0 else x0)
  return np.stack(out)


@pytest.mark.parametrize('norm,loss,targeted,clip', [
    ('linf', 'ce', False, (0.0, 1.0)),
    ('linf', 'mse', True, None),
    ('l2', 'margin', False, (0.0, 1.0)),
    ('l2', 'ce', True, None),
])
def test_matches_per_example_reference(norm, loss, targeted, clip):
  x, y = _data()
  v = _mlp_vars()
  eps = jnp.asarray([0.0, 0.02, 0.05, 0.1, 0.3, 0.6], jnp.float32)
  attack = attacks.make_pgd(mlp_apply, norm=norm, loss=loss, steps=5,
                            rel_step_size=0.4, random_start=False,
                            targeted=targeted, clip=clip)
  ours = attack(v, x, y, KEY, eps)
  ref = _reference_pgd(mlp_apply, v, x, y, eps, norm=norm, loss=loss, steps=5,
                       rel_step=0.4, clip=clip, targeted=targeted)
  np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_loop_modes_agree():
  x, y = _data()
  results = [
      attacks.make_pgd(mlp_apply, steps=4, loop=loop, random_start=False)(
          _mlp_vars(), x, y, KEY, 0.1)
      for loop in ('fori', 'scan', 'unroll', 3)]
  for r in results[1:]:
    np.testing.assert_allclose(r, results[0], atol=1e-6)
  assert attacks.default_loop('cpu') in attacks.LOOPS


def test_eps_sweep_compiles_once():
  x, y = _data()
  # chex inspects the source, so it wraps the record's kernel function.
  attack = chex.assert_max_traces(
      attacks.make_pgd(mlp_apply, steps=3, clip=(0.0, 1.0)).kernel, n=1)
  sweep = jax.jit(jax.vmap(attack, in_axes=(None, None, None, None, 0)))
  grids = [jnp.linspace(0.0, 0.1, 8), jnp.linspace(0.0, 0.3, 8),
           jnp.asarray([0.5, 0.0, 0.2, 0.1, 0.0, 0.05, 0.3, 0.01])]
  for g in grids:
    out = sweep(_mlp_vars(), x, y, KEY, g)
    chex.assert_shape(out, (8, B, D))
    np.testing.assert_array_equal(out[jnp.argmin(g)], x)  # eps=0 row
  chex.clear_trace_counter()


def test_pgd_at_least_as_strong_as_fgsm():
  x, y = _data(shape=(64, D))
  v = _mlp_vars()
  loss = attacks.get_loss('ce')
  fgsm = attacks.make_fgsm(mlp_apply)(v, x, y, KEY, 0.2)
  pgd = attacks.make_pgd(mlp_apply, steps=10, random_start=False)(
      v, x, y, KEY, 0.2)
  assert float(loss(mlp_apply(v, pgd), y).mean()) >= float(
      loss(mlp_apply(v, fgsm), y).mean())


def test_restarts_keep_strongest_per_example():
  x, y = _data()
  v = _mlp_vars()
  r = 3
  best = attacks.make_pgd(mlp_apply, steps=2, restarts=r, clip=(0.0, 1.0))(
      v, x, y, KEY, 0.3)
  assert float(jnp.abs(best - x).max()) <= 0.3 + 1e-6
  single = attacks.make_pgd(mlp_apply, steps=2, clip=(0.0, 1.0))
  margins = np.stack([
      np.asarray(attacks.label_margin(mlp_apply(v, single(v, x, y, k, 0.3)),
                                      y))
      for k in jax.random.split(KEY, r)])
  got = np.asarray(attacks.label_margin(mlp_apply(v, best), y))
  np.testing.assert_allclose(got, margins.min(0), atol=1e-5)


def test_return_info():
  x, y = _data()
  v = _mlp_vars()
  x_adv, info = attacks.make_pgd(mlp_apply, norm='l2', return_info=True)(
      v, x, y, KEY, 0.5)
  for k in ('success', 'margin', 'prediction', 'linf', 'l2'):
    chex.assert_shape(info[k], (B,))
  d = np.asarray(x_adv - x)
  np.testing.assert_allclose(info['linf'], np.abs(d).max(1), atol=1e-7)
  np.testing.assert_allclose(info['l2'], np.linalg.norm(d, axis=1), atol=1e-6)
  pred = np.asarray(mlp_apply(v, x_adv)).argmax(1)
  np.testing.assert_array_equal(info['prediction'], pred)
  np.testing.assert_array_equal(info['success'], pred != np.asarray(y))
  np.testing.assert_array_equal(np.asarray(info['margin']) < 0,
                                pred != np.asarray(y))


def test_attack_through_frontend():
  """apply_fn = model o frontend: the raw IMU window is what gets perturbed."""
  rng = np.random.default_rng(3)
  t, c = 20, 3
  x_raw = jnp.asarray(rng.normal(size=(B, t, c)), jnp.float32)
  y = jnp.asarray(rng.integers(0, K, size=B), jnp.int32)
  v = {'w': jnp.asarray(rng.normal(size=(2 * c, K)), jnp.float32),
       'b': jnp.zeros((K,), jnp.float32)}

  def window_stats(x):  # [B, T, C] -> [B, 2C]: per-channel mean and variance
    return jnp.concatenate([x.mean(1), x.var(1)], axis=-1)

  def feature_model(v, f):
    return f @ v['w'] + v['b']

  def apply_raw(v, x):
    return feature_model(v, window_stats(x))

  attack = attacks.make_pgd(apply_raw, steps=5, clip=(-4.0, 4.0))
  x_adv = attack(v, x_raw, y, KEY, 0.2)
  chex.assert_shape(x_adv, (B, t, c))
  assert float(jnp.abs(x_adv - x_raw).max()) <= 0.2 + 1e-6
  ce = attacks.get_loss('ce')
  assert np.all(np.asarray(ce(apply_raw(v, x_adv), y))
                > np.asarray(ce(apply_raw(v, x_raw), y)))


def test_flax_module_in_eval_mode():
  flax_nn = pytest.importorskip('flax.linen')

  class Net(flax_nn.Module):

    @flax_nn.compact
    def __call__(self, x, train=False):
      x = flax_nn.Dense(8)(x)
      x = flax_nn.BatchNorm(use_running_average=not train)(x)
      return flax_nn.Dense(K)(flax_nn.relu(x))

  x, y = _data()
  net = Net()
  v = net.init(KEY, x)
  apply_fn = lambda v, x: net.apply(v, x, train=False)
  # Eval mode: each example's result is independent of the rest of the batch.
  x_adv_half = attacks.make_pgd(apply_fn, steps=3, random_start=False)(
      v, x[:3], y[:3], KEY, 0.1)
  x_adv_full = attacks.make_pgd(apply_fn, steps=3, random_start=False)(
      v, x, y, KEY, 0.1)
  np.testing.assert_allclose(x_adv_half, x_adv_full[:3], atol=1e-6)
  assert float(jnp.abs(x_adv_full - x).max()) <= 0.1 + 1e-6


BAD_FACTORY = [
    dict(steps=0), dict(steps=2.5), dict(norm='l1'), dict(loss='hinge'),
    dict(step_size=-0.1), dict(step_size=float('nan')),
    dict(step_size=0.1, rel_step_size=0.5), dict(clip=(1.0, 0.0)),
    dict(clip=(0.0, float('inf'))), dict(restarts=0),
    dict(restarts=2, random_start=False), dict(loop='while'), dict(loop=0),
    dict(targeted='yes'),
]


@pytest.mark.parametrize('kwargs', BAD_FACTORY, ids=str)
def test_bad_static_options_raise(kwargs):
  with pytest.raises(ValueError):
    attacks.make_pgd(mlp_apply, **kwargs)


def _bad_inputs():
  x, y = _data()
  return {
      'negative eps': (x, y, -0.1),
      'nan eps': (x, y, float('nan')),
      'inf eps': (x, y, float('inf')),
      'negative per-example eps': (x, y, jnp.asarray([0.1] * 5 + [-0.1])),
      'eps shape': (x, y, jnp.zeros((B + 1,))),
      'batch mismatch': (x, y[:-1], 0.1),
      'nan in x': (x.at[1, 2].set(jnp.nan), y, 0.1),
      'inf in x': (x.at[0, 0].set(jnp.inf), y, 0.1),
      'label too large': (x, y.at[0].set(K), 0.1),
      'negative label': (x, y.at[0].set(-1), 0.1),
      'float labels': (x, y.astype(jnp.float32), 0.1),
      'integer x': (jnp.ones((B, D), jnp.int32), y, 0.1),
  }


@pytest.mark.parametrize('case', sorted(_bad_inputs()))
def test_bad_inputs_raise(case):
  x, y, eps = _bad_inputs()[case]
  attack = attacks.make_pgd(mlp_apply, steps=2)
  with pytest.raises(ValueError):
    attack(_mlp_vars(), x, y, KEY, eps)


def test_shape_errors_raise_under_jit():
  x, y = _data()
  attack = jax.jit(attacks.make_pgd(mlp_apply, steps=2))
  with pytest.raises(ValueError, match='y must have shape'):
    attack(_mlp_vars(), x, y[:-1], KEY, 0.1)


def test_check_inputs_public():
  x, y = _data()
  attacks.check_inputs(x, y, 0.1, num_classes=K)
  with pytest.raises(ValueError, match=r'labels must be in \[0, 3\)'):
    attacks.check_inputs(x, y.at[0].set(3), 0.1, num_classes=3)
