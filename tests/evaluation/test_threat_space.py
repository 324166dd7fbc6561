"""Threat models: the signal space through differentiable front-ends, the
threat config checks. (Per-channel clip and eps of the kernels themselves:
tests/attacks/test_threat.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tinyrobust import attacks
from tinyrobust.evaluation import threat_space
from tinyrobust.data import audio
from tinyrobust.data import auritus
from tinyrobust.data import base
from tinyrobust.data import har_features

RNG = np.random.default_rng(0)
MEAN = np.asarray([0.0, 0.1, 0.9, 1.0, -2.0, 3.0], np.float32)
STD = np.asarray([0.3, 0.2, 0.25, 40.0, 30.0, 50.0], np.float32)
W = RNG.normal(size=(8 * 6, 3)).astype(np.float32)
RAW6 = {'channels': 'raw6', 'normalisation': 'standardise'}


def _raw6_dataset():
  x = RNG.normal(size=(10, 8, 6)).astype(np.float32)
  return base.Dataset(x=x, y=(np.arange(10) % 3).astype(np.int32),
                      label_names=('a', 'b', 'c'), input_range=None,
                      meta={'channels': 'raw6', 'train_mean': MEAN.tolist(),
                            'train_std': STD.tolist(),
                            'normalisation': 'standardise'}, name='auritus')


def linear(v, x):
  return x.reshape(x.shape[0], -1) @ v


def _problem(ds, units='g', gyro_per_g=None, options=RAW6, clip=None):
  threat = threat_space.check_threat(
      {'space': 'signal', 'eps_units': units, 'gyro_per_g': gyro_per_g,
       'clip': clip}, 'auritus', options)
  return threat_space.attack_problem(threat, ds, linear, name='auritus',
                                     options=options)


def test_signal_fgsm_equals_the_closed_form_through_a_linear_front_end():
  ds = _raw6_dataset()
  prob = _problem(ds)  # gyro_per_g from the train std in the dataset meta
  np.testing.assert_allclose(prob.x, ds.x * STD + MEAN, rtol=1e-6)
  gyro_per_g = float(np.mean(STD[3:]) / np.mean(STD[:3]))
  assert prob.info['gyro_per_g'] == pytest.approx(gyro_per_g)
  eps = 0.05  # g on acc, 0.05 * gyro_per_g deg/s on gyro
  fgsm = attacks.make_fgsm(prob.apply_fn, clip=prob.clip,
                           eps_scale=prob.eps_scale)
  x_adv = np.asarray(fgsm(jnp.asarray(W), prob.x, ds.y, jax.random.key(0),
                          eps))
  # Independent closed form: d loss / d x_signal = (d loss / d x_in) / std,
  # so its sign is the input-space gradient's sign.
  loss = lambda x: optax.softmax_cross_entropy_with_integer_labels(
      linear(W, x), ds.y).sum()
  g_in = np.asarray(jax.grad(loss)(jnp.asarray(ds.x)))
  radius = eps * np.asarray([1, 1, 1] + [gyro_per_g] * 3, np.float32)
  want = np.clip(prob.x + radius * np.sign(g_in), prob.clip[0], prob.clip[1])
  np.testing.assert_allclose(x_adv, want, rtol=1e-5, atol=1e-5)
  # Per channel the perturbation stays in its own ball and sensor range.
  d = np.abs(x_adv - prob.x).max(axis=(0, 1))
  assert np.all(d <= radius + 1e-5) and np.all(d >= radius * 0.99)
  assert np.all(x_adv >= prob.clip[0]) and np.all(x_adv <= prob.clip[1])
  assert prob.clip[1][0] == pytest.approx(4.0, 1e-3)  # int16 full scale
  assert prob.clip[1][3] == pytest.approx(500.0, 1e-3)
  # The same ball stated in deg/s: eps 5 deg/s on gyro, 5 / gyro_per_g g.
  prob = _problem(ds, units='deg/s', gyro_per_g=100.0)
  np.testing.assert_allclose(prob.eps_scale, [0.01] * 3 + [1.0] * 3)
  assert 'deg/s' in prob.eps_units and prob.info['gyro_per_g'] == 100.0


def test_a_stated_per_channel_clip_keeps_each_channel_in_its_range():
  ds = _raw6_dataset()
  lo, hi = [-1.0, -1.0, 0.5, -5.0, -5.0, -5.0], [1.0, 1.0, 1.5, 5.0, 5, 5]
  prob = _problem(ds, gyro_per_g=10.0, clip=(lo, hi))
  pgd = attacks.make_pgd(prob.apply_fn, steps=3, clip=prob.clip,
                         eps_scale=prob.eps_scale)
  x0 = np.clip(prob.x, lo, hi)
  x_adv = np.asarray(pgd(jnp.asarray(W), x0, ds.y, jax.random.key(1), 2.0))
  per_lo, per_hi = x_adv.min(axis=(0, 1)), x_adv.max(axis=(0, 1))
  assert np.all(per_lo >= np.asarray(lo) - 1e-6)
  assert np.all(per_hi <= np.asarray(hi) + 1e-6)
  assert per_hi[2] > 1.0  # channel 2 reaches past the other acc channels


def _mfcc_model(v, x):
  return jnp.tanh(x.reshape(x.shape[0], -1) @ v['w1']) @ v['w2']


def test_gradients_flow_through_the_mfcc_and_har_feature_front_ends():
  v = {'w1': jnp.asarray(RNG.normal(size=(490, 8)) * 0.1, jnp.float32),
       'w2': jnp.asarray(RNG.normal(size=(8, 3)), jnp.float32)}
  wave = RNG.uniform(-0.3, 0.3, size=(2, 16000)).astype(np.float32)
  wave[1, :8000] = 0.0  # half a clip of silence: still finite
  g = jax.grad(lambda s: _mfcc_model(v, audio.mfcc(s)).sum())(wave)
  assert np.all(np.isfinite(g)) and np.mean(np.abs(g) > 0) > 0.5
  raw = RNG.normal(size=(2, 50, 6)).astype(np.float32)
  wf = jnp.asarray(RNG.normal(size=(10, 3)), jnp.float32)
  g = jax.grad(lambda s: (har_features.window_features(s) @ wf).sum())(raw)
  # min/max pass the gradient to their arg-extremum: every window gets one.
  assert np.all(np.isfinite(g)) and np.all(np.abs(g).sum(axis=(1, 2)) > 0)


def _tones(n, seed):
  """Two classes of 0.25 s tones (500 Hz vs 1.5 kHz) with noise."""
  r = np.random.default_rng(seed)
  t = np.arange(4000) / 16000.0
  y = (np.arange(n) % 2).astype(np.int32)
  f = np.where(y == 0, 500.0, 1500.0)[:, None] * r.uniform(0.9, 1.1, (n, 1))
  x = 0.3 * np.sin(2 * np.pi * f * t) + 0.05 * r.normal(size=(n, 4000))
  return x.astype(np.float32), y


def _train_linear(feats, y, num_classes, steps=300):
  mean, std = feats.mean(0), feats.std(0) + 1e-6
  z = (feats - mean) / std
  w = jnp.zeros((z.shape[1], num_classes))
  opt = optax.adam(0.05)
  state = opt.init(w)
  loss = lambda w: optax.softmax_cross_entropy_with_integer_labels(
      z @ w, y).mean()
  step = jax.jit(lambda w, s: (lambda g: (lambda u, s2: (
      optax.apply_updates(w, u), s2))(*opt.update(g, s, w)))(jax.grad(loss)(w)))
  for _ in range(steps):
    w, state = step(w, state)
  return w, mean, std


def _flip_rates(apply_fn, v, x, y, eps, clip):
  fgsm = attacks.make_fgsm(apply_fn, clip=clip)
  pred = np.asarray(apply_fn(v, x)).argmax(-1)
  assert np.mean(pred == y) > 0.9  # the tiny model learnt the task
  adv = np.asarray(fgsm(v, x, y, jax.random.key(0), eps))
  noise = np.clip(x + eps * np.sign(RNG.normal(size=x.shape)), *clip)
  flip = lambda a: float(np.mean(np.asarray(apply_fn(v, a)).argmax(-1)
                                 != pred))
  assert np.max(np.abs(adv - x)) <= eps * 1.0001
  return flip(adv), flip(noise.astype(np.float32))


def test_signal_fgsm_beats_random_noise_of_the_same_norm():
  # Keyword-spotting-like: waveform -> MFCC -> standardise -> linear.
  x, y = _tones(64, 0)
  feats = np.asarray(jax.jit(audio.mfcc)(x)).reshape(len(x), -1)
  w, mean, std = _train_linear(feats, y, 2)
  apply_audio = lambda v, s: ((audio.mfcc(s).reshape(s.shape[0], -1) - mean)
                              / std) @ v
  adv, noise = _flip_rates(apply_audio, w, x, y, 0.02, (-1.0, 1.0))
  assert adv >= noise + 0.3, (adv, noise)
  # HAR-like: raw windows -> the 10 window features -> standardise.
  r = np.random.default_rng(1)
  yh = (np.arange(64) % 2).astype(np.int32)
  amp = np.where(yh == 0, 0.1, 0.4)[:, None, None]
  raw = np.concatenate([1.0 + amp * r.normal(size=(64, 50, 3)),
                        40 * amp * r.normal(size=(64, 50, 3))], -1)
  raw = raw.astype(np.float32)
  feats = np.asarray(har_features.window_features(raw))
  w, mean, std = _train_linear(feats, yh, 2)
  apply_har = lambda v, s: ((har_features.window_features(s) - mean) / std
                            ) @ v
  adv, noise = _flip_rates(apply_har, w, raw, yh, 0.3, (-500.0, 500.0))
  assert adv >= noise + 0.3, (adv, noise)


def test_signal_problems_of_speech_commands_and_auritus_features(
    monkeypatch):
  """The raw split is re-loaded, checked against the model inputs and the
  front-end reproduces them (loader stubbed with synthetic signals)."""
  wave, y = _tones(6, 2)
  wave = np.pad(wave, ((0, 0), (0, 12000)))
  mfcc = audio.compute_features(wave, 'mfcc')
  raw_windows = RNG.normal(size=(6, 50, 6)).astype(np.float32)
  raw_windows[..., 3:] *= 50.0
  feats = np.asarray(har_features.window_features(raw_windows))
  fmean, fstd = feats.mean(0), feats.std(0)
  loaded = {
      'speech_commands': base.Dataset(wave, y, ('a', 'b'), (-1.0, 1.0), {}),
      'auritus': base.Dataset(raw_windows, y, ('a', 'b'), None, {}),
  }
  monkeypatch.setattr(base, 'load',
                      lambda name, split, **options: loaded[name])
  model = lambda v, x: x.reshape(x.shape[0], -1)[:, :2] * v
  ds = base.Dataset(mfcc, y, ('a', 'b'), None, {'features': 'mfcc'})
  threat = threat_space.check_threat({'space': 'signal'}, 'speech_commands',
                                     {'features': 'mfcc'})
  prob = threat_space.attack_problem(threat, ds, model, name='speech_commands',
                                     options={'features': 'mfcc'})
  assert prob.x.shape == (6, 16000) and prob.clip[1] == 1.0
  np.testing.assert_allclose(prob.apply_fn(1.0, prob.x), model(1.0, mfcc),
                             rtol=1e-4, atol=1e-4)
  ds = base.Dataset((feats - fmean) / fstd, y, ('a', 'b'), None, {
      'channels': 'features', 'normalisation': 'standardise',
      'train_mean': fmean.tolist(), 'train_std': fstd.tolist()})
  opts = {'channels': 'features'}
  threat = threat_space.check_threat(
      {'space': 'signal', 'gyro_per_g': 50.0}, 'auritus', opts)
  prob = threat_space.attack_problem(threat, ds, model, name='auritus',
                                     options=opts)
  np.testing.assert_allclose(prob.x, raw_windows)
  np.testing.assert_allclose(prob.apply_fn(1.0, prob.x), model(1.0, ds.x),
                             rtol=1e-4, atol=1e-4)
  # A raw split that does not line up with the model's is refused.
  loaded['auritus'] = base.Dataset(raw_windows, 1 - y, ('a', 'b'), None, {})
  with pytest.raises(RuntimeError, match='labels differ'):
    threat_space.attack_problem(threat, ds, model, name='auritus',
                                options=opts)


@pytest.mark.parametrize('section, dataset, options, match', [
    ({'clip': ([-4.0] * 6, [4.0] * 4 + [-500.0, 500.0]), 'space': 'signal'},
     'auritus', RAW6, "lo > hi for 'gyro_y_dps'"),
    ({'clip': (1.0, 0.0)}, 'digits', {}, 'lo <= hi'),
    ({'space': 'signal', 'eps_units': 'train-std'}, 'auritus', RAW6,
     "'train-std' does not match space='signal'.*other space"),
    ({'eps_units': 'g'}, 'auritus', RAW6, "'g' does not match space='input'"),
    ({'space': 'input', 'eps_units': 'waveform'}, 'speech_commands',
     {'features': 'mfcc'}, "Valid: mfcc"),
    ({'space': 'signal'}, 'basic_motions', {},
     "'basic_motions' has none.*no physical units"),
    ({'space': 'signal'}, 'my_plugin_set', {}, "'my_plugin_set' has none"),
    ({'space': 'sensor'}, 'digits', {}, "'sensor'. Valid: input, signal"),
    ({'epsilon_units': 'g'}, 'digits', {}, "Unknown threat option"),
    ({'precisions': ['int4']}, 'digits', {}, "'int4'"),
    ({'space': 'signal', 'gyro_per_g': -3.0}, 'auritus', RAW6,
     'positive number'),
    ({'gyro_per_g': 3.0}, 'digits', {}, 'applies to AURITUS'),
])
def test_bad_threat_sections_are_refused_by_name(section, dataset, options,
                                                 match):
  with pytest.raises(ValueError, match=match):
    threat_space.check_threat(section, dataset, options)


def test_defaults_and_the_sensor_range_in_the_meta():
  t = threat_space.check_threat(None, 'auritus', RAW6)
  assert t == {'space': 'input', 'eps_units': 'train-std', 'clip': None,
               'precisions': ['float32'], 'gyro_per_g': None}
  t = threat_space.check_threat({'space': 'signal', 'precisions': [
      'int8-fakequant']}, 'speech_commands', {'features': 'mfcc'})
  assert t['eps_units'] == 'waveform'
  assert t['precisions'] == ['float32', 'int8-fakequant']
  assert threat_space.check_threat({'space': 'signal'}, 'digits', {})[
      'eps_units'] == 'pixel/255'
  assert auritus.ACC_RANGE_G == pytest.approx((-4.0, 4.0), abs=1e-3)
  assert auritus.GYRO_RANGE_DPS == pytest.approx((-500.27, 500.26), abs=0.01)
