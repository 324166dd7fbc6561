"""Tests for the 10 HAR window features and the IMU resampling helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust.data import har_features
from tinyrobust.data import imu


def _study_features(win):
  """The study's NumPy loop on one [T, 2] magnitude window."""
  f = np.zeros(10)
  f[0], f[1] = np.min(win[:, 0]), np.min(win[:, 1])
  f[2], f[3] = np.max(win[:, 0]), np.max(win[:, 1])
  f[4], f[5] = f[2] - f[0], f[3] - f[1]
  f[6], f[7] = np.var(win[:, 0]), np.var(win[:, 1])
  f[8], f[9] = np.sqrt(f[6]), np.sqrt(f[7])
  return f


def test_matches_study_numpy_loop():
  rng = np.random.default_rng(0)
  x = np.concatenate([rng.normal(0, 1, (5, 120, 3)),
                      rng.normal(0, 80, (5, 120, 3))], -1).astype(np.float32)
  mag = np.stack([np.linalg.norm(x[..., :3], axis=-1),
                  np.linalg.norm(x[..., 3:], axis=-1)], -1)
  want = np.stack([_study_features(w) for w in mag])
  got = np.asarray(jax.jit(har_features.window_features)(x))
  assert got.shape == (5, 10)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(har_features.window_features(mag), want,
                             rtol=1e-4, atol=1e-4)


def test_gradient_is_finite_on_constant_and_zero_windows():
  grad = jax.jit(jax.grad(lambda v: har_features.window_features(v)[:, 6:]
                          .sum()))
  x = jnp.zeros((2, 50, 6)).at[1].set(1.0)
  g = grad(x)
  assert np.all(np.isfinite(np.asarray(g)))
  rng = np.random.default_rng(1)
  g = grad(jnp.asarray(rng.normal(size=(2, 50, 6)), jnp.float32))
  assert np.abs(np.asarray(g)).max() > 0


def test_bad_channel_count():
  with pytest.raises(ValueError, match='channels'):
    har_features.window_features(jnp.zeros((1, 10, 4)))


def test_resample_averages_bursts_and_splits_gaps():
  t = np.array([0, 0, 10, 20, 20, 30, 2000, 2010])
  x = np.array([[0.], [2.], [3.], [4.], [6.], [7.], [1.], [3.]])
  segs = imu.resample_uniform(x, t, rate_hz=200.0, max_gap_s=1.0)
  assert len(segs) == 2
  np.testing.assert_allclose(segs[0][:, 0],
                             [1, 2, 3, 4, 5, 6, 7])  # 5 ms grid
  np.testing.assert_allclose(segs[1][:, 0], [1, 2, 3])
  bridged = imu.resample_uniform(x, t, rate_hz=100.0)
  assert len(bridged) == 1 and bridged[0].shape == (202, 1)
  with pytest.raises(ValueError, match='non-decreasing'):
    imu.resample_uniform(x, t[::-1], rate_hz=100.0)


def test_sliding_windows():
  x = np.arange(20, dtype=np.float32).reshape(10, 2)
  w = imu.sliding_windows(x, 4, 3)
  assert w.shape == (3, 4, 2)
  np.testing.assert_array_equal(w[1], x[3:7])
  assert imu.sliding_windows(x, 11, 1).shape == (0, 11, 2)
