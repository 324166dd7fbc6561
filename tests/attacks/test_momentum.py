"""MI-FGSM: FGSM at one step, the momentum recursion, ball, clip, eps=0."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust import attacks
from tinyrobust.attacks import momentum

B, D, K = 6, 10, 4
KEY = jax.random.key(0)


def mlp_apply(v, x):
  h = jnp.tanh(x.reshape(x.shape[0], -1) @ v['w1'] + v['b1'])
  return h @ v['w2']


def _vars(seed=1, hidden=16):
  rng = np.random.default_rng(seed)
  return {'w1': jnp.asarray(rng.normal(size=(D, hidden)) / 3, jnp.float32),
          'b1': jnp.asarray(rng.normal(size=(hidden,)), jnp.float32),
          'w2': jnp.asarray(rng.normal(size=(hidden, K)), jnp.float32)}


def _data(seed=2):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.uniform(0.0, 1.0, size=(B, D)), jnp.float32),
          jnp.asarray(rng.integers(0, K, size=B), jnp.int32))


@pytest.mark.parametrize('norm', ['linf', 'l2'])
@pytest.mark.parametrize('loss', ['ce', 'margin'])
def test_one_step_equals_fgsm(norm, loss):
  x, y = _data()
  eps = jnp.asarray([0.0, 0.01, 0.05, 0.1, 0.3, 1.0], jnp.float32)
  mi = attacks.get_attack('mi-fgsm', mlp_apply, norm=norm, loss=loss,
                          steps=1, clip=(0.0, 1.0))
  fgsm = attacks.make_fgsm(mlp_apply, norm=norm, loss=loss, clip=(0.0, 1.0))
  got, want = mi(_vars(), x, y, KEY, eps), fgsm(_vars(), x, y, KEY, eps)
  if norm == 'linf':
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  else:  # g / ||g||_1 then / ||.||_2: equal up to float rounding
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-7)
  assert mi.name == 'mi-fgsm' and mi.config['decay'] == 1.0


def _reference(v, x, y, eps, steps, mu, norm):
  """The paper's recursion written out in NumPy-on-JAX, one example batch."""
  alpha = eps / steps
  grad = jax.jit(jax.grad(lambda z: jnp.sum(attacks.get_loss('ce')(
      mlp_apply(v, z), y))))
  xa, g = x, jnp.zeros_like(x)
  for _ in range(steps):
    gr = np.asarray(grad(xa), np.float64)
    g = mu * g + gr / np.abs(gr).sum(1, keepdims=True)
    if norm == 'linf':
      step = np.sign(g)
      xa = np.clip(xa + alpha * step, x - eps, x + eps)
    else:
      step = g / np.linalg.norm(g, axis=1, keepdims=True)
      d = xa + alpha * step - x
      n = np.linalg.norm(d, axis=1, keepdims=True)
      xa = x + d * np.minimum(1.0, eps / n)
    xa = jnp.asarray(xa, jnp.float32)
  return np.asarray(xa)


@pytest.mark.parametrize('norm', ['linf', 'l2'])
def test_matches_written_out_recursion(norm):
  x, y = _data(seed=3)
  for mu in (1.0, 0.5):
    attack = momentum.make_mifgsm(mlp_apply, norm=norm, steps=5, decay=mu,
                                  loop='fori')
    got = np.asarray(attack(_vars(), x, y, KEY, 0.2))
    want = _reference(_vars(), x, y, 0.2, 5, mu, norm)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize('norm', ['linf', 'l2'])
@pytest.mark.parametrize('loop', ['host', 'fori', 'unroll'])
def test_stays_in_ball_and_clip_eps_zero_identity(norm, loop):
  x, y = _data()
  x = x.at[0, 0].set(1.5)  # outside the clip: eps=0 must still return x
  eps = jnp.asarray([0.0, 0.01, 0.05, 0.2, 0.0, 2.0], jnp.float32)
  attack = attacks.make_mifgsm(mlp_apply, norm=norm, steps=4,
                               step_size=0.3, clip=(0.0, 1.0), loop=loop)
  x_adv = np.asarray(attack(_vars(), x, y, KEY, eps))
  d = x_adv - np.asarray(x)
  n = np.abs(d).max(1) if norm == 'linf' else np.sqrt((d ** 2).sum(1))
  assert np.all(n <= np.asarray(eps) + 1e-6), (n, eps)
  moved = np.asarray(eps) > 0
  assert np.all((x_adv[moved] >= 0.0) & (x_adv[moved] <= 1.0))
  np.testing.assert_array_equal(x_adv[~moved], np.asarray(x)[~moved])
  assert n[3] > 0.0


def test_vmaps_over_eps_and_beats_clean():
  x, y = _data()
  attack = attacks.make_mifgsm(mlp_apply, steps=5, return_info=True)
  sweep = jax.jit(jax.vmap(attack, in_axes=(None, None, None, None, 0)))
  grid = jnp.asarray([0.0, 0.1, 0.5], jnp.float32)
  x_adv, info = sweep(_vars(), x, y, KEY, grid)
  assert x_adv.shape == (3, B, D)
  for i, e in enumerate(np.asarray(grid)):
    one = attack(_vars(), x, y, KEY, e)[0]
    np.testing.assert_allclose(np.asarray(x_adv[i]), np.asarray(one),
                               atol=1e-6)
  margins = np.asarray(info['margin'])
  assert np.all(margins[2] <= margins[0] + 1e-5)  # never helps the model


@pytest.mark.parametrize('bad', [dict(decay=-1.0), dict(decay=float('nan')),
                                 dict(steps=0), dict(norm='l1'),
                                 dict(step_size=0.1, rel_step_size=0.5)])
def test_bad_options_raise(bad):
  with pytest.raises(ValueError):
    attacks.make_mifgsm(mlp_apply, **bad)


def test_host_and_fori_loops_give_the_same_output():
  x, y = _data(seed=4)
  eps = jnp.asarray([0.05, 0.1, 0.2, 0.0, 0.3, 0.5], jnp.float32)
  out = {loop: np.asarray(attacks.make_mifgsm(
      mlp_apply, norm='l2', steps=7, chunk=3, clip=(0.0, 1.0), loop=loop)(
          _vars(), x, y, KEY, eps)) for loop in ('host', 'fori')}
  np.testing.assert_allclose(out['host'], out['fori'], atol=1e-6)
