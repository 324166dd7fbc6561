"""Audio budgets in dB against closed forms (a sine of known RMS)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust import attacks
from tinyrobust.attacks import snr
from tinyrobust.evaluation import robustness_run

T = 1600


def _sines(amps):
  t = np.arange(T) / 16000.0
  return np.stack([a * np.sin(2 * np.pi * 440.0 * t)
                   for a in amps]).astype(np.float32)


def test_sine_closed_form_at_20_db():
  amps = np.array([0.5, 0.1, 1.0])
  x = _sines(amps)                       # 440 Hz: 44 whole periods in T
  rms = amps / np.sqrt(2)
  linf = np.asarray(attacks.eps_from_snr_db(x, 20.0, norm='linf'))
  np.testing.assert_allclose(linf, rms * 0.1, rtol=1e-5)
  l2 = np.asarray(attacks.eps_from_snr_db(x, 20.0, norm='l2'))
  np.testing.assert_allclose(l2, rms * np.sqrt(T) * 0.1, rtol=1e-5)


@pytest.mark.parametrize('db', [0.0, 20.0, 37.5, -6.0])
def test_perturbation_at_radius_measures_requested_snr(db):
  x = _sines([0.5, 0.2])
  rng = np.random.default_rng(0)
  eps = np.asarray(attacks.eps_from_snr_db(x, db, norm='linf'))
  full = eps[:, None] * rng.choice([-1.0, 1.0], size=x.shape)  # +-eps
  np.testing.assert_allclose(np.asarray(attacks.snr_db(x, full)), db,
                             atol=1e-4)
  eps2 = np.asarray(attacks.eps_from_snr_db(x, db, norm='l2'))
  d = rng.normal(size=x.shape)
  d *= eps2[:, None] / np.linalg.norm(d, axis=1, keepdims=True)
  np.testing.assert_allclose(np.asarray(attacks.snr_db(x, d)), db,
                             atol=1e-4)


def test_per_example_snr_inf_silence_and_per_example_db():
  x = np.concatenate([_sines([0.5]), np.zeros((1, T), np.float32)])
  eps = np.asarray(attacks.eps_from_snr_db(x, jnp.asarray([np.inf, 10.0]),
                                           norm='linf'))
  np.testing.assert_array_equal(eps, [0.0, 0.0])
  d = np.ones_like(x)
  got = np.asarray(attacks.snr_db(x, np.stack([np.zeros(T), d[1]])))
  assert got[0] == np.inf and got[1] == -np.inf


def test_kernels_take_per_example_radius_and_db_wrapper():
  rng = np.random.default_rng(1)
  w = jnp.asarray(rng.normal(size=(T, 3)) / 40, jnp.float32)
  apply_fn = lambda v, a: a @ v
  x = jnp.asarray(_sines([0.5, 0.1, 0.3]))
  y = jnp.asarray([0, 1, 2], jnp.int32)
  pgd = attacks.make_pgd(apply_fn, steps=3, clip=(-1.0, 1.0))
  eps = attacks.eps_from_snr_db(x, 30.0, norm='linf')
  x_adv = pgd(w, x, y, jax.random.key(0), eps)
  measured = np.asarray(attacks.snr_db(x, x_adv - x))
  assert np.all(measured >= 30.0 - 1e-3), measured
  # relative_attack: eps argument r = 10^(-dB / 20), vmappable over a grid;
  # r = 0 is the identity and the balls grow with r.
  rel = attacks.relative_attack(pgd)
  assert rel.name == 'pgd' and 'SNR_dB' in rel.config['eps_units']
  db = np.array([np.inf, 40.0, 20.0])
  grid = jnp.asarray(attacks.ratio_from_snr_db(db), jnp.float32)
  np.testing.assert_allclose(np.asarray(grid), [0.0, 0.01, 0.1], rtol=1e-6)
  np.testing.assert_allclose(attacks.snr_db_from_ratio(grid), db, rtol=1e-5)
  out = jax.vmap(rel, in_axes=(None, None, None, None, 0))(
      w, x, y, jax.random.key(0), grid)
  np.testing.assert_array_equal(np.asarray(out[0]), np.asarray(x))
  np.testing.assert_allclose(np.asarray(out[2]), np.asarray(pgd(
      w, x, y, jax.random.key(0), attacks.eps_from_snr_db(
          x, 20.0, norm='linf'))), atol=1e-6)
  for i in (1, 2):
    assert np.all(np.asarray(attacks.snr_db(x, out[i] - x)) >= db[i] - 1e-3)


def test_universal_eps_and_protocol():
  x = _sines([0.5, 1.0])
  mean_ms = np.mean([0.5 ** 2 / 2, 1.0 / 2])
  np.testing.assert_allclose(
      attacks.universal_eps_from_snr_db(x, 20.0, norm='linf'),
      np.sqrt(mean_ms) * 0.1, rtol=1e-6)
  p = snr.protocol('l2')
  assert p['eps_units'] == 'dB' and '10^(-snr_db / 20)' in p['formula']


@pytest.mark.parametrize('kwargs', [dict(snr_db=float('nan'), norm='l2'),
                                    dict(snr_db=-np.inf, norm='l2'),
                                    dict(snr_db=20.0, norm='l1'),
                                    dict(snr_db=np.zeros(5), norm='l2')])
def test_bad_inputs_raise(kwargs):
  with pytest.raises(ValueError):
    attacks.eps_from_snr_db(_sines([0.5, 0.2]), **kwargs)


def test_relative_attack_runs_in_the_evaluator_with_a_db_grid():
  rng = np.random.default_rng(2)
  x = (_sines(rng.uniform(0.1, 0.9, size=24)) * rng.choice(
      [-1.0, 1.0], size=(24, 1))).astype(np.float32)
  w = jnp.asarray(rng.normal(size=(T, 3)) / 40, jnp.float32)
  y = np.asarray(np.argmax(x @ np.asarray(w), 1), np.int32)  # all correct
  rel = attacks.relative_attack(attacks.make_pgd(lambda v, a: a @ v, steps=3,
                                                 clip=(-1.0, 1.0)))
  db = [np.inf, 40.0, 20.0, 6.0]
  run = robustness_run(lambda v, a: a @ v, w, (x, y), attacks={'pgd': rel},
                       eps_grid=attacks.ratio_from_snr_db(db), batch_size=32,
                       seed=0, clip=(-1.0, 1.0), sanity_checks=False)
  robust = [p['robust_correct']
            for p in run.results['attacks']['pgd']['per_eps']]
  assert robust[0] == 24 and robust == sorted(robust, reverse=True)
  assert robust[-1] < 24
