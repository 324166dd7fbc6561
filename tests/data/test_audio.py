"""Tests for the JAX keyword-spotting front-end against tf.signal."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust.data import audio
from tinyrobust.data import speech_commands
from tinyrobust.tf_setup import import_tf


def _tf_reference(x):
  """The MLPerf Tiny KWS front-end written with tf.signal."""
  tf = import_tf()
  stft = tf.signal.stft(x, frame_length=480, frame_step=320, fft_length=512,
                        window_fn=tf.signal.hann_window)
  mag = tf.abs(stft)
  w = tf.signal.linear_to_mel_weight_matrix(
      num_mel_bins=40, num_spectrogram_bins=257, sample_rate=16000,
      lower_edge_hertz=20.0, upper_edge_hertz=4000.0)
  logmel = tf.math.log(tf.tensordot(mag, w, 1) + 1e-6)
  mfcc = tf.signal.mfccs_from_log_mel_spectrograms(logmel)[..., :10]
  return mag.numpy(), w.numpy(), logmel.numpy(), mfcc.numpy()


def _clips(n=3, seed=0):
  rng = np.random.default_rng(seed)
  t = np.arange(16000) / 16000.0
  x = 0.3 * np.sin(2 * np.pi * (300 + 400 * rng.random((n, 1))) * t)
  x += 0.05 * rng.standard_normal((n, 16000))
  return x.astype(np.float32)


def _close(got, want, rel=1e-3):
  np.testing.assert_allclose(got, want, rtol=rel,
                             atol=rel * np.abs(want).max())


def test_matches_tf_signal():
  x = _clips()
  mag, w, logmel, mfcc = _tf_reference(x)
  _close(audio.mel_matrix(), w, 1e-5)
  _close(np.asarray(audio.magnitude_spectrogram(x)), mag)
  _close(np.asarray(audio.log_mel(x)), logmel)
  got = np.asarray(jax.jit(audio.mfcc)(x))
  assert got.shape == (3, 49, 10)
  _close(got, mfcc)


def test_matches_tf_signal_on_real_speech(shared_data_dir):
  # The source's cached copy, shared with the other speech tests.
  d = speech_commands._npz(  # pylint: disable=protected-access
      f'{shared_data_dir}/{speech_commands.FILENAME}')
  x = d['audio'][::600][:8].astype(np.float32) / 32768.0
  _, _, logmel, mfcc = _tf_reference(x)
  _close(np.asarray(audio.log_mel(x)), logmel)
  _close(np.asarray(audio.mfcc(x)), mfcc)


def test_shapes_and_frame_count():
  assert audio.KWS.num_frames(16000) == 1 + (16000 - 480) // 320 == 49
  assert audio.feature_shape('mfcc') == (49, 10)
  assert audio.feature_shape('logmel') == (49, 40)
  assert audio.feature_shape('waveform') == (16000,)
  assert audio.log_mel(jnp.zeros((2, 16000))).shape == (2, 49, 40)


def test_gradient_is_finite_even_on_silence():
  x = jnp.asarray(_clips(2)).at[1].set(0.0)
  g = jax.grad(lambda v: audio.mfcc(v).sum())(x)
  assert g.shape == x.shape
  assert np.all(np.isfinite(np.asarray(g)))
  assert np.abs(np.asarray(g[0])).max() > 0


def test_compute_features_batches_match_single_call():
  x = _clips(5, seed=1)
  got = audio.compute_features(x, 'mfcc', batch_size=2)
  np.testing.assert_allclose(got, np.asarray(audio.mfcc(x)), rtol=1e-5,
                             atol=1e-4)
  assert audio.compute_features(x, 'waveform') is not None
  np.testing.assert_array_equal(audio.compute_features(x, 'waveform'), x)


def test_bad_arguments():
  with pytest.raises(ValueError, match='spectrogram'):
    audio.feature_fn('spectrogram')
  with pytest.raises(ValueError, match='fft_length'):
    audio.FrontEndConfig(fft_length=256)
  with pytest.raises(ValueError, match='at least'):
    audio.mfcc(jnp.zeros((1, 100)))
