"""Per-channel clip ranges and per-channel eps (eps_scale) in the kernels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust import attacks

B, T, C, K = 8, 6, 3, 4
KEY = jax.random.key(0)
LO = np.asarray([-1.0, 0.0, -4.0], np.float32)
HI = np.asarray([1.0, 0.5, 4.0], np.float32)
SCALE = np.asarray([1.0, 0.1, 10.0], np.float32)


def _vars(seed=0):
  rng = np.random.default_rng(seed)
  return {'w': jnp.asarray(rng.normal(size=(T * C, K)), jnp.float32),
          'b': jnp.asarray(rng.normal(size=(K,)), jnp.float32)}


def apply_fn(v, x):  # [B, T, C] -> [B, K], a tanh layer so steps differ
  return jnp.tanh(x.reshape(x.shape[0], -1) @ v['w']) * 3.0 + v['b']


def _data(seed=1):
  rng = np.random.default_rng(seed)
  x = rng.uniform(LO, HI, size=(B, T, C)).astype(np.float32)
  y = rng.integers(0, K, size=B).astype(np.int32)
  return jnp.asarray(x), jnp.asarray(y)


def _scaled_size(d, norm, scale):
  u = np.asarray(d, np.float64) / scale
  u = u.reshape(u.shape[0], -1)
  return np.abs(u).max(1) if norm == 'linf' else np.linalg.norm(u, axis=1)


@pytest.mark.parametrize('norm', ['linf', 'l2'])
@pytest.mark.parametrize('factory', ['fgsm', 'pgd'])
def test_per_channel_clip_keeps_each_channel_in_its_range(norm, factory):
  x, y = _data()
  attack = attacks.get_attack(factory, apply_fn, norm=norm,
                              clip=(LO, HI))
  x_adv = np.asarray(attack(_vars(), x, y, KEY, 10.0))  # eps >> ranges
  for c in range(C):
    assert x_adv[..., c].min() >= LO[c] and x_adv[..., c].max() <= HI[c], c
  if norm == 'linf' and factory == 'fgsm':  # one big step: all on a bound
    at_bound = np.isclose(x_adv, LO) | np.isclose(x_adv, HI)
    assert at_bound.all()


@pytest.mark.parametrize('norm', ['linf', 'l2'])
def test_per_channel_eps_stays_in_its_own_ball(norm):
  x, y = _data()
  eps = jnp.linspace(0.05, 0.5, B)
  pgd = attacks.make_pgd(apply_fn, norm=norm, steps=5, eps_scale=SCALE)
  d = np.asarray(pgd(_vars(), x, y, KEY, eps)) - np.asarray(x)
  size = _scaled_size(d, norm, SCALE)
  assert np.all(size <= np.asarray(eps) * (1 + 1e-5)), (size, eps)
  assert np.all(size >= 0.5 * np.asarray(eps))  # it does use the budget
  if norm == 'linf':  # each channel inside its own box eps * s_c
    per_channel = np.abs(d).max(axis=(0, 1))
    assert np.all(per_channel <= float(eps.max()) * SCALE * (1 + 1e-5))
    assert per_channel[2] > float(eps.max()) * SCALE[0]  # wider than s=1


@pytest.mark.parametrize('norm', ['linf', 'l2'])
def test_scaled_fgsm_closed_form(norm):
  """FGSM on the scaled ball: delta = eps * s * sign(g) (L-inf) or
  eps * s * (g s) / ||g s|| (L2), with g the input gradient."""
  x, y = _data()
  v = _vars()
  eps = 0.3
  ce = attacks.get_loss('ce')
  g = np.asarray(jax.grad(lambda x: jnp.sum(ce(apply_fn(v, x), y)))(x),
                 np.float64)
  if norm == 'linf':
    want = eps * SCALE * np.sign(g)
  else:
    gs = g * SCALE
    want = eps * SCALE * gs / np.linalg.norm(
        gs.reshape(B, -1), axis=1)[:, None, None]
  got = attacks.make_fgsm(apply_fn, norm=norm, eps_scale=SCALE)(
      v, x, y, KEY, eps)
  np.testing.assert_allclose(np.asarray(got) - np.asarray(x), want,
                             atol=1e-5)


@pytest.mark.parametrize('norm', ['linf', 'l2'])
def test_unit_eps_scale_is_the_old_behaviour(norm):
  x, y = _data()
  kw = dict(norm=norm, steps=3, clip=(LO, HI))
  eps = jnp.linspace(0.0, 0.4, B)
  old = attacks.make_pgd(apply_fn, **kw)(_vars(), x, y, KEY, eps)
  for scale in (1.0, np.ones((T, C))):
    new = attacks.make_pgd(apply_fn, eps_scale=scale, **kw)(
        _vars(), x, y, KEY, eps)
    np.testing.assert_array_equal(new, old)
  # A scalar clip equals the same clip given per channel (on data inside
  # it: a clip that excludes the data is refused).
  x = jnp.clip(x, -1.0, 1.0)
  a = attacks.make_fgsm(apply_fn, norm=norm, clip=(-1.0, 1.0))
  b = attacks.make_fgsm(apply_fn, norm=norm, clip=(-np.ones(C), np.ones(C)))
  np.testing.assert_array_equal(a(_vars(), x, y, KEY, 0.3),
                                b(_vars(), x, y, KEY, 0.3))


@pytest.mark.parametrize('kwargs,match', [
    (dict(clip=(np.asarray([0.0, 1.0, 0.0]), np.asarray([1.0, 0.5, 1.0]))),
     r'lo <= hi, got lo=1.0 > hi=0.5 at index \(1,\) \(channel 1\)'),
    (dict(clip=(0.0, np.asarray([1.0, np.inf]))),
     r'clip hi must be finite, got inf at index \(1,\)'),
    (dict(clip=(np.zeros(2), np.ones(3))), 'do not broadcast together'),
    (dict(clip=('a', 1.0)), 'clip lo must be a number'),
    (dict(clip=(0.0,)), 'pair'),
    (dict(eps_scale=np.asarray([1.0, 0.0, 2.0])),
     r'eps_scale must be finite and > 0, got 0.0 at index \(1,\)'),
    (dict(eps_scale=-1.0), 'eps_scale must be finite and > 0, got -1.0'),
    (dict(eps_scale=np.asarray([1.0, np.nan])), 'eps_scale'),
    (dict(eps_scale=True), 'eps_scale must be a number'),
])
def test_bad_clip_and_scale_raise_at_build(kwargs, match):
  with pytest.raises(ValueError, match=match):
    attacks.make_pgd(apply_fn, **kwargs)


def test_shapes_that_do_not_fit_the_example_raise_at_call():
  x, y = _data()
  bad = attacks.make_pgd(apply_fn, eps_scale=np.ones(C + 1))
  with pytest.raises(ValueError, match=r'eps_scale of shape \(4,\) does not '
                     r'broadcast to one example\'s shape \(6, 3\)'):
    bad(_vars(), x, y, KEY, 0.1)
  with pytest.raises(ValueError, match='clip lo of shape'):
    jax.jit(attacks.make_fgsm(apply_fn, clip=(np.zeros((2, C)), 1.0)))(
        _vars(), x, y, KEY, 0.1)
