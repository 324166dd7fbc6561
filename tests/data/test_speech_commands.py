"""Tests for the Speech Commands source and background-noise mixing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust import data
from tinyrobust.data import audio
from tinyrobust.data import augment
from tinyrobust.data import sources
from tinyrobust.data import speech_commands as sc


def test_speaker_split_is_grouped_and_deterministic():
  rng = np.random.default_rng(0)
  spk = np.array([f's{i}' for i in rng.integers(0, 60, 900)] + [''] * 100)
  parts = sc.speaker_split(spk, (0.7, 0.1, 0.2), seed=3)
  assert sum(len(p) for p in parts) == 1000
  assert len(np.unique(np.concatenate(parts))) == 1000
  sets = [set(spk[p]) - {''} for p in parts]
  assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
  assert [int((spk[p] == '').sum()) for p in parts] == [70, 10, 20]
  assert abs(len(parts[0]) / 1000 - 0.7) < 0.05
  again = sc.speaker_split(spk, (0.7, 0.1, 0.2), seed=3)
  assert all(np.array_equal(a, b) for a, b in zip(parts, again))
  other = sc.speaker_split(spk, (0.7, 0.1, 0.2), seed=4)
  assert not np.array_equal(parts[1], other[1])


def test_local_splits(shared_data_dir):
  splits = {s: data.load('speech_commands', s, data_dir=shared_data_dir)
            for s in ('train', 'val', 'test')}
  assert sum(len(d) for d in splits.values()) == 4890 - 121
  spk = [set(d.meta['speakers']) for d in splits.values()]
  assert not (spk[0] & spk[1] or spk[0] & spk[2] or spk[1] & spk[2])
  assert len(spk[0] | spk[1] | spk[2]) == 239
  for d in splits.values():
    assert d.x.shape[1:] == (16000,) and d.x.dtype == np.float32
    assert -1.0 <= d.x.min() and d.x.max() <= 1.0
    assert d.input_range == (-1.0, 1.0) and d.num_classes == 12
    assert d.class_counts()['_silence_'] > 0
  with_dups = data.load('speech_commands', 'train', data_dir=shared_data_dir,
                        drop_duplicates=False)
  assert len(with_dups) == len(splits['train']) + with_dups.meta[
      'duplicates_in_split']


def test_local_mfcc_features(shared_data_dir):
  wav = data.load('speech_commands', 'val', data_dir=shared_data_dir)
  mf = data.load('speech_commands', 'val', data_dir=shared_data_dir,
                 features='mfcc')
  assert mf.x.shape == (len(wav), 49, 10) and mf.input_range is None
  np.testing.assert_allclose(mf.x[:4], np.asarray(audio.mfcc(wav.x[:4])),
                             rtol=1e-4, atol=1e-3)
  np.testing.assert_array_equal(mf.y, wav.y)


def test_tfds_mock_pads_and_features():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=5):
    wav = data.load('speech_commands', 'val', source='tfds')
    lm = data.load('speech_commands', 'test', source='tfds',
                   features='logmel')
    batches = list(data.stream('speech_commands', 'train', 2, source='tfds',
                               features='mfcc'))
  assert wav.x.shape == (5, 16000) and wav.meta['speakers'] is None
  assert np.all(wav.x[:, 300:] == 0.0)  # mock clips are short: zero-padded
  assert np.abs(wav.x).max() <= 1.0
  assert lm.x.shape == (5, 49, 40)
  assert [b[0].shape for b in batches] == [(2, 49, 10)] * 2 + [(1, 49, 10)]


def test_background_noise(shared_data_dir):
  noise = sc.load_background_noise(shared_data_dir)
  assert len(noise) == 6 and all(v.ndim == 1 for v in noise.values())
  fn = jax.jit(sc.make_background_noise(shared_data_dir, prob=1.0,
                                        max_volume=0.5))
  x = jnp.zeros((8, 16000))
  y = np.asarray(fn(jax.random.key(0), x))
  assert np.all(np.abs(y).max(axis=1) > 0) and np.abs(y).max() <= 1.0
  np.testing.assert_array_equal(y, np.asarray(fn(jax.random.key(0), x)))
  assert not np.array_equal(y, np.asarray(fn(jax.random.key(1), x)))
  aug = jax.jit(augment.get_augment('time_shift+background_noise',
                                    data_dir=shared_data_dir, max_shift=100))
  assert aug(jax.random.key(0), x).shape == x.shape


def test_noise_mixer_adds_scaled_excerpts():
  # Recording r is the ramp 100 r + [0, 1, ...]: an excerpt reveals its source.
  recs = [100.0 * r + np.arange(n, dtype=np.float32) for r, n in
          ((1, 50), (2, 70), (3, 40))]
  fn = jax.jit(sc.noise_mixer(recs, prob=0.5, max_volume=2e-3,
                              num_samples=16))
  y = np.asarray(fn(jax.random.key(0), jnp.zeros((64, 16))), np.float64)
  mixed = np.abs(y).max(1) > 0
  assert 10 < mixed.sum() < 54  # about half the clips get noise
  checked = 0
  for row in y[mixed]:
    vol = np.diff(row).mean()
    if vol < 2e-4:
      continue  # too quiet to read back the offset in float32
    np.testing.assert_allclose(np.diff(row), vol, rtol=1e-3)
    rec, off = divmod(round(row[0] / vol), 100)
    assert rec in (1, 2, 3) and 0 <= off <= len(recs[rec - 1]) - 16
    checked += 1
  assert checked > 5
  off = jax.jit(sc.noise_mixer(recs, prob=0.0, max_volume=1.0,
                               num_samples=16))
  x = jnp.full((4, 16), 0.1)
  np.testing.assert_array_equal(off(jax.random.key(0), x), x)


def test_missing_data(tmp_path, monkeypatch):
  monkeypatch.delenv('TINYROBUST_DATA_DIR', raising=False)
  with pytest.raises(sources.DataNotFoundError, match='TINYROBUST_DATA_DIR'):
    data.load('speech_commands', 'train', data_dir=str(tmp_path),
              download=False, tfds_data_dir=str(tmp_path))
  with pytest.raises(sources.DataNotFoundError,
                     match='speech_commands_background_noise.npz'):
    sc.make_background_noise(str(tmp_path / 'none'))


def test_bad_options():
  with pytest.raises(ValueError, match='features'):
    data.load('speech_commands', 'train', features='spectrogram')
  with pytest.raises(ValueError, match='test_fraction'):
    data.load('speech_commands', 'train', val_fraction=0.5,
              test_fraction=0.6)
  with pytest.raises(ValueError, match='prob'):
    sc.make_background_noise(prob=2.0)
