"""Signal-space threat model: the attack perturbs raw IMU windows in g and
deg/s through the differentiable standardisation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tinyrobust import attacks
from tinyrobust import threat_model
from tinyrobust.data import base

RNG = np.random.default_rng(0)
MEAN = np.asarray([0.0, 0.1, 0.9, 1.0, -2.0, 3.0], np.float32)
STD = np.asarray([0.3, 0.2, 0.25, 40.0, 30.0, 50.0], np.float32)
W = RNG.normal(size=(8 * 6, 3)).astype(np.float32)


def _dataset(channels='raw6'):
  x = RNG.normal(size=(10, 8, 6)).astype(np.float32)
  return base.Dataset(x=x, y=(np.arange(10) % 3).astype(np.int32),
                      label_names=('a', 'b', 'c'), input_range=None,
                      meta={'channels': channels, 'train_mean': MEAN.tolist(),
                            'train_std': STD.tolist(),
                            'normalisation': 'standardise'}, name='auritus')


def linear(v, x):
  return x.reshape(x.shape[0], -1) @ v


def test_signal_fgsm_equals_the_closed_form_through_the_standardisation():
  ds = _dataset()
  sig = threat_model.signal_space(ds, linear)
  np.testing.assert_allclose(sig.x, ds.x * STD + MEAN, rtol=1e-6)
  gyro_per_g = float(np.mean(STD[3:]) / np.mean(STD[:3]))
  assert sig.info['gyro_per_g'] == pytest.approx(gyro_per_g)
  eps = 0.05  # g on acc, 0.05 * gyro_per_g deg/s on gyro
  fgsm = attacks.make_fgsm(sig.apply_fn, clip=sig.clip,
                           eps_scale=sig.eps_scale)
  x_adv = np.asarray(fgsm(jnp.asarray(W), sig.x, ds.y, jax.random.key(0),
                          eps))
  # Independent closed form: d loss / d x_signal = (d loss / d x_in) / std,
  # so its sign is the input-space gradient's sign.
  loss = lambda x: optax.softmax_cross_entropy_with_integer_labels(
      linear(W, x), ds.y).sum()
  g_in = np.asarray(jax.grad(loss)(jnp.asarray(ds.x)))
  radius = eps * np.asarray([1, 1, 1] + [gyro_per_g] * 3, np.float32)
  want = np.clip(sig.x + radius * np.sign(g_in), sig.clip[0], sig.clip[1])
  np.testing.assert_allclose(x_adv, want, rtol=1e-5, atol=1e-5)
  # Per channel the perturbation stays in its own ball and sensor range.
  d = np.abs(x_adv - sig.x).max(axis=(0, 1))
  assert np.all(d <= radius + 1e-5)
  assert np.all(x_adv >= sig.clip[0]) and np.all(x_adv <= sig.clip[1])
  assert sig.clip[1][0] == pytest.approx(4.0, 1e-3)  # int16 full scale
  assert sig.clip[1][3] == pytest.approx(500.0, 1e-3)


def test_datasets_without_a_signal_front_end_are_refused_by_name():
  with pytest.raises(ValueError, match="'features'"):
    threat_model.signal_space(_dataset('features'), linear)
  with pytest.raises(ValueError, match='gyro_per_g'):
    threat_model.signal_space(_dataset(), linear, gyro_per_g=-1.0)
