"""Tests for the pure-JAX augmentation registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust.data import augment


def _images(b=8):
  return jnp.asarray(np.random.default_rng(b).random((b, 6, 6, 2)),
                     jnp.float32)


def test_none_and_flip():
  x = _images()
  np.testing.assert_array_equal(augment.get_augment('none')(None, x), x)
  y = np.asarray(jax.jit(augment.get_augment('flip'))(jax.random.key(1), x))
  flipped = [np.array_equal(y[i], np.asarray(x[i, :, ::-1])) for i in range(8)]
  kept = [np.array_equal(y[i], np.asarray(x[i])) for i in range(8)]
  assert all(f or k for f, k in zip(flipped, kept))
  assert any(flipped) and any(kept)


def test_crop_flip_is_a_shifted_window_of_the_padded_image():
  x = _images(16)
  fn = jax.jit(augment.get_augment('crop_flip', pad=2))
  y = np.asarray(fn(jax.random.key(3), x))
  assert y.shape == x.shape
  xp = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)))
  for i in range(16):
    found = any(
        np.array_equal(y[i], w) or np.array_equal(y[i], w[:, ::-1])
        for oy in range(5) for ox in range(5)
        for w in [xp[i, oy:oy + 6, ox:ox + 6]])
    assert found
  assert not np.array_equal(y, np.asarray(x))
  # Deterministic in the key, different across keys.
  np.testing.assert_array_equal(y, np.asarray(fn(jax.random.key(3), x)))
  assert not np.array_equal(y, np.asarray(fn(jax.random.key(4), x)))


def test_noise_and_time_shift():
  x = np.zeros((4, 100), np.float32)
  y = jax.jit(augment.get_augment('noise', std=0.5, clip=(-0.1, 0.1)))(
      jax.random.key(0), x)
  assert float(jnp.abs(y).max()) == pytest.approx(0.1)
  ramp = np.tile(np.arange(1.0, 101.0, dtype=np.float32), (64, 1))
  s = np.asarray(jax.jit(augment.get_augment('time_shift', max_shift=10))(
      jax.random.key(0), ramp))
  for row in s:
    nz = row[row > 0]
    assert np.all(np.diff(nz) == 1)  # contiguous piece of the ramp
    assert 90 <= len(nz) <= 100
  assert len({int(r[r > 0][0]) for r in s}) > 3


def test_composition_and_errors():
  x = _images()
  fn = jax.jit(augment.get_augment('flip+noise', std=0.0))
  y = np.asarray(fn(jax.random.key(0), x))
  assert y.shape == x.shape
  assert any(np.array_equal(y[i], np.asarray(x[i, :, ::-1])) for i in range(8))
  with pytest.raises(ValueError, match='mixup'):
    augment.get_augment('mixup')
  with pytest.raises(ValueError, match='sigma'):
    augment.get_augment('noise', sigma=1.0)
