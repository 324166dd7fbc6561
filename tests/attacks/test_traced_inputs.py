"""Bad eps or labels under an outer jit are NaN, never a silent no-op."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust import attacks

B, D, K = 5, 4, 3
KEY = jax.random.key(0)


def apply_fn(v, x):
  return x @ v


def _setup():
  rng = np.random.default_rng(0)
  v = jnp.asarray(rng.normal(size=(D, K)), jnp.float32)
  x = jnp.asarray(rng.uniform(size=(B, D)), jnp.float32)
  y = jnp.asarray([0, 1, 2, 0, 1], jnp.int32)
  return v, x, y


@pytest.mark.parametrize('factory', ['fgsm', 'pgd'])
def test_bad_eps_under_jit_is_nan_per_example(factory):
  v, x, y = _setup()
  attack = attacks.get_attack(factory, apply_fn, clip=(0.0, 1.0),
                              return_info=True)
  eps = jnp.asarray([-0.1, jnp.nan, 0.1, 0.0, jnp.inf])
  x_adv, info = jax.jit(attack)(v, x, y, KEY, eps)
  x_adv = np.asarray(x_adv)
  bad = np.asarray([True, True, False, False, True])
  assert np.isnan(x_adv[bad]).all()
  assert np.isfinite(x_adv[~bad]).all()
  np.testing.assert_array_equal(x_adv[3], np.asarray(x)[3])  # eps = 0
  assert float(np.abs(x_adv[2] - np.asarray(x)[2]).max()) > 0  # it moved
  np.testing.assert_array_equal(info['valid'], ~bad)
  assert not np.asarray(info['success'])[bad].any()
  # Concrete calls still raise before any work.
  with pytest.raises(ValueError, match='eps must be finite and >= 0'):
    attack(v, x, y, KEY, eps)


def test_negative_eps_in_a_jitted_sweep_is_a_nan_row():
  v, x, y = _setup()
  attack = attacks.make_pgd(apply_fn, steps=2)
  sweep = jax.jit(jax.vmap(attack, in_axes=(None, None, None, None, 0)))
  out = np.asarray(sweep(v, x, y, KEY, jnp.asarray([0.0, -0.05, 0.05])))
  np.testing.assert_array_equal(out[0], np.asarray(x))
  assert np.isnan(out[1]).all() and np.isfinite(out[2]).all()


@pytest.mark.parametrize('label', [-1, K, K + 7])
def test_out_of_range_label_under_jit_is_nan(label):
  v, x, y = _setup()
  y = y.at[1].set(label)
  x_adv = np.asarray(jax.jit(attacks.make_fgsm(apply_fn))(v, x, y, KEY, 0.1))
  assert np.isnan(x_adv[1]).all()
  assert np.isfinite(np.delete(x_adv, 1, axis=0)).all()
