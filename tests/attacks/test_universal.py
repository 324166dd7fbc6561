"""Universal perturbations (SGD-UAP): one array, ball, clip, strength, replay."""

import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust import attacks

D, K = 64, 3


def linear_apply(v, x):
  return x.reshape(x.shape[0], -1) @ v['w'] + v['b']


def _task(n=600, seed=0):
  """Gaussian blobs in [0, 1]^D and their nearest-mean linear classifier."""
  rng = np.random.default_rng(seed)
  mu = rng.uniform(0.4, 0.6, size=(K, D))
  y = rng.integers(0, K, size=n).astype(np.int32)
  x = np.clip(mu[y] + 0.08 * rng.normal(size=(n, D)), 0, 1).astype(np.float32)
  # argmin_k ||x - mu_k||^2 = argmax_k x . mu_k - ||mu_k||^2 / 2
  v = {'w': jnp.asarray(mu.T, jnp.float32),
       'b': jnp.asarray(-0.5 * (mu ** 2).sum(1), jnp.float32)}
  return v, x, y


def _accuracy(v, x, y):
  return float(np.mean(np.argmax(np.asarray(linear_apply(v, x)), 1) == y))


@pytest.mark.parametrize('norm,eps', [('linf', 0.08), ('l2', 0.64)])
def test_one_array_in_ball_and_clip_and_beats_random_noise(norm, eps):
  v, x, y = _task()
  x_tr, y_tr, x_te, y_te = x[:400], y[:400], x[400:], y[400:]
  assert _accuracy(v, x_te, y_te) > 0.95
  uap = attacks.fit_universal(linear_apply, v, x_tr, y_tr, eps=eps,
                              norm=norm, clip=(0.0, 1.0), epochs=10,
                              batch_size=100, seed=3)
  delta, protocol = uap
  assert isinstance(delta, np.ndarray) and delta.shape == (D,)
  size = (np.abs(delta).max() if norm == 'linf'
          else np.sqrt((delta.astype(np.float64) ** 2).sum()))
  assert size <= eps * (1 + 1e-5) and size > 0.5 * eps
  x_adv = uap.apply(x_te)
  np.testing.assert_array_equal(x_adv, np.clip(x_te + delta, 0.0, 1.0))
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  adv_acc = _accuracy(v, x_adv, y_te)
  # Random noise of the same norm (same L-inf and L2 for the sign vectors),
  # one vector for every example as delta is, ten fixed draws.
  rng = np.random.default_rng(7)
  noise_acc = []
  for _ in range(10):
    r = (rng.choice([-1.0, 1.0], size=D) if norm == 'linf'
         else rng.normal(size=D))
    r = r * size / (np.abs(r).max() if norm == 'linf' else np.linalg.norm(r))
    noise_acc.append(_accuracy(v, np.clip(x_te + r, 0, 1), y_te))
  assert adv_acc < min(noise_acc) - 0.3, (adv_acc, noise_acc)
  assert protocol['steps'] == 10 * 4 and protocol['sources'] == ['model']
  assert protocol['eps'] == eps and protocol['norm'] == norm
  assert 'Shafahi' in protocol['method']


def test_deterministic_for_a_seed_and_eps_scale_ball():
  v, x, y = _task(n=300)
  scale = np.linspace(0.5, 2.0, D)
  fit = lambda seed: attacks.fit_universal(
      linear_apply, v, x, y, eps=0.05, eps_scale=scale, epochs=2,
      batch_size=64, step_size=0.02, seed=seed).delta
  a, b, c = fit(1), fit(1), fit(2)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert np.all(np.abs(a) <= 0.05 * scale + 1e-7)


def test_ensemble_of_identical_members_equals_single_model():
  v, x, y = _task(n=200)
  one = attacks.fit_universal(linear_apply, v, x, y, eps=0.05, epochs=2,
                              batch_size=50, seed=0)
  two = attacks.fit_universal({'a': (linear_apply, v), 'b': (linear_apply, v)},
                              None, x, y, eps=0.05, epochs=2, batch_size=50,
                              seed=0)
  np.testing.assert_allclose(two.delta, one.delta, atol=1e-7)
  assert two.protocol['sources'] == ['a', 'b']


def test_save_load_round_trip(tmp_path):
  v, x, y = _task(n=100)
  uap = attacks.fit_universal(linear_apply, v, x, y, eps=0.1, norm='l2',
                              clip=(0.0, 1.0), epochs=1, batch_size=50,
                              seed=5, eps_units='input')
  path = attacks.save_universal(str(tmp_path / 'uap.npz'), uap)
  back = attacks.load_universal(path)
  np.testing.assert_array_equal(back.delta, uap.delta)
  assert back.protocol == uap.protocol
  np.testing.assert_array_equal(back.apply(x), uap.apply(x))


@pytest.mark.parametrize('bad', [dict(eps=-0.1), dict(norm='l1'),
                                 dict(epochs=0), dict(batch_size=0),
                                 dict(loss='nope'), dict(seed=-1),
                                 dict(clip=(1.0, 0.0))])
def test_bad_options_raise(bad):
  v, x, y = _task(n=20)
  kwargs = dict(eps=0.1, epochs=1, batch_size=10)
  kwargs.update(bad)
  with pytest.raises(ValueError):
    attacks.fit_universal(linear_apply, v, x, y, **kwargs)
