"""Differentiable keyword-spotting front-end in JAX: STFT, log-mel and MFCC.

The pipeline is the MLPerf Tiny KWS one built on `tf.signal` (1 s at 16 kHz,
30 ms Hann windows every 20 ms, 512-point FFT, magnitude spectrum, 40 mel bands
between 20 Hz and 4 kHz, `log(mel + 1e-6)`, orthonormal-scaled DCT-II, first 10
coefficients), re-written with `jnp` so that gradients flow from features back
to the waveform. A model can therefore be attacked in feature space (inputs are
`[B, 49, 10]` MFCCs) or on the raw waveform (inputs are `[B, 16000]` samples
and the model calls `mfcc` first).

Frames are taken without padding, like `tf.signal.stft(pad_end=False)`:
`1 + (16000 - 480) // 320 = 49` frames per clip. The mel matrix reproduces
`tf.signal.linear_to_mel_weight_matrix` (HTK mel scale, DC bin zeroed) and the
DCT reproduces `tf.signal.mfccs_from_log_mel_spectrograms`; the tests check both
against TensorFlow to 1e-3 relative.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class FrontEndConfig:
  """Static front-end settings (defaults: MLPerf Tiny KWS).

  Attributes:
    sample_rate: Hz.
    frame_length: window length in samples (480 = 30 ms at 16 kHz).
    frame_step: hop in samples (320 = 20 ms).
    fft_length: FFT size (>= frame_length).
    num_mel_bins: mel bands.
    lower_hz: lower edge of the first mel band.
    upper_hz: upper edge of the last mel band.
    num_mfcc: MFCC coefficients kept.
    log_offset: added to the mel energies before the log.
  """
  sample_rate: int = 16000
  frame_length: int = 480
  frame_step: int = 320
  fft_length: int = 512
  num_mel_bins: int = 40
  lower_hz: float = 20.0
  upper_hz: float = 4000.0
  num_mfcc: int = 10
  log_offset: float = 1e-6

  def __post_init__(self):
    if self.fft_length < self.frame_length:
      raise ValueError(f'fft_length ({self.fft_length}) must be >= '
                       f'frame_length ({self.frame_length}).')
    if not 0.0 <= self.lower_hz < self.upper_hz <= self.sample_rate / 2:
      raise ValueError(
          f'Need 0 <= lower_hz < upper_hz <= sample_rate/2, got lower_hz='
          f'{self.lower_hz}, upper_hz={self.upper_hz}, sample_rate='
          f'{self.sample_rate}.')
    if not 1 <= self.num_mfcc <= self.num_mel_bins:
      raise ValueError(f'num_mfcc must be in [1, num_mel_bins='
                       f'{self.num_mel_bins}], got {self.num_mfcc}.')

  def num_frames(self, num_samples: int) -> int:
    """Frames produced from `num_samples` samples (no end padding)."""
    if num_samples < self.frame_length:
      raise ValueError(f'Need at least frame_length={self.frame_length} '
                       f'samples, got {num_samples}.')
    return 1 + (num_samples - self.frame_length) // self.frame_step


KWS = FrontEndConfig()

FEATURES = ('waveform', 'logmel', 'mfcc')


def _hz_to_mel(f):
  # HTK formula, as tf.signal uses.
  return 1127.0 * np.log1p(np.asarray(f, np.float64) / 700.0)


@functools.lru_cache(maxsize=None)
def mel_matrix(cfg: FrontEndConfig = KWS) -> np.ndarray:
  """Triangular mel filterbank, `[fft_length // 2 + 1, num_mel_bins]`.

  Same construction as `tf.signal.linear_to_mel_weight_matrix`: band edges
  equally spaced on the HTK mel scale, the DC bin gets zero weight.
  """
  num_bins = cfg.fft_length // 2 + 1
  freqs = np.linspace(0.0, cfg.sample_rate / 2, num_bins)[1:]
  spec_mel = _hz_to_mel(freqs)[:, None]
  edges = np.linspace(_hz_to_mel(cfg.lower_hz), _hz_to_mel(cfg.upper_hz),
                      cfg.num_mel_bins + 2)
  lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
  lower_slope = (spec_mel - lower) / (center - lower)
  upper_slope = (upper - spec_mel) / (upper - center)
  w = np.maximum(0.0, np.minimum(lower_slope, upper_slope))
  return np.pad(w, ((1, 0), (0, 0))).astype(np.float32)


@functools.lru_cache(maxsize=None)
def dct_matrix(num_mel_bins: int, num_mfcc: int) -> np.ndarray:
  """DCT-II scaled like `tf.signal.mfccs_from_log_mel_spectrograms`.

  Returns `[num_mel_bins, num_mfcc]`; `log_mel @ D` gives the MFCCs.
  """
  n = np.arange(num_mel_bins)[:, None]
  k = np.arange(num_mfcc)[None, :]
  # tf: dct(type=2) = 2 * sum x_n cos(pi k (2n+1) / 2N), times rsqrt(2N).
  d = 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * num_mel_bins))
  return (d / np.sqrt(2.0 * num_mel_bins)).astype(np.float32)


def _hann(length: int) -> np.ndarray:
  # Periodic Hann, as tf.signal.hann_window(periodic=True).
  n = np.arange(length)
  return (0.5 - 0.5 * np.cos(2 * np.pi * n / length)).astype(np.float32)


def _safe_sqrt(v):
  # sqrt with a finite (zero) gradient at 0, so silent frames don't give NaNs.
  pos = v > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, v, 1.0)), 0.0)


def frames(x: jax.Array, cfg: FrontEndConfig = KWS) -> jax.Array:
  """Splits `[..., samples]` into `[..., num_frames, frame_length]`."""
  n = cfg.num_frames(x.shape[-1])
  idx = (np.arange(n)[:, None] * cfg.frame_step +
         np.arange(cfg.frame_length)[None, :])
  return x[..., idx]


def magnitude_spectrogram(x: jax.Array,
                          cfg: FrontEndConfig = KWS) -> jax.Array:
  """|STFT| of `[..., samples]` -> `[..., frames, fft_length // 2 + 1]`."""
  fr = frames(jnp.asarray(x, jnp.float32), cfg) * _hann(cfg.frame_length)
  spec = jnp.fft.rfft(fr, n=cfg.fft_length, axis=-1)
  return _safe_sqrt(jnp.real(spec)**2 + jnp.imag(spec)**2)


def log_mel(x: jax.Array, cfg: FrontEndConfig = KWS) -> jax.Array:
  """Log-mel spectrogram, `[..., samples]` -> `[..., frames, num_mel_bins]`.

  Args:
    x: waveform in [-1, 1] (float), e.g. `[B, 16000]`.
    cfg: front-end settings.

  Returns:
    `log(mel_energy + log_offset)`, e.g. `[B, 49, 40]`.
  """
  mel = magnitude_spectrogram(x, cfg) @ mel_matrix(cfg)
  return jnp.log(mel + cfg.log_offset)


def mfcc(x: jax.Array, cfg: FrontEndConfig = KWS) -> jax.Array:
  """MFCCs, `[..., samples]` -> `[..., frames, num_mfcc]` (`[B, 49, 10]`)."""
  return log_mel(x, cfg) @ dct_matrix(cfg.num_mel_bins, cfg.num_mfcc)


def feature_fn(kind: str, cfg: FrontEndConfig = KWS):
  """Returns the `[B, samples] -> features` function for `kind` in FEATURES."""
  if kind not in FEATURES:
    raise ValueError(f'Unknown audio features {kind!r}. Valid: '
                     f'{", ".join(FEATURES)}.')
  if kind == 'waveform':
    return lambda x: jnp.asarray(x, jnp.float32)
  return functools.partial(log_mel if kind == 'logmel' else mfcc, cfg=cfg)


def feature_shape(kind: str, num_samples: int = 16000,
                  cfg: FrontEndConfig = KWS) -> tuple[int, ...]:
  """Per-example output shape of `feature_fn(kind)` (no batch axis)."""
  if kind not in FEATURES:
    raise ValueError(f'Unknown audio features {kind!r}. Valid: '
                     f'{", ".join(FEATURES)}.')
  if kind == 'waveform':
    return (num_samples,)
  width = cfg.num_mel_bins if kind == 'logmel' else cfg.num_mfcc
  return (cfg.num_frames(num_samples), width)


def compute_features(x: np.ndarray, kind: str, *, batch_size: int = 512,
                     cfg: FrontEndConfig = KWS) -> np.ndarray:
  """Applies the front-end to a NumPy array in jitted batches.

  Args:
    x: `[N, samples]` float32 waveforms in [-1, 1].
    kind: one of FEATURES.
    batch_size: clips per jitted call (the last batch is padded, so one
      compilation serves every batch).
    cfg: front-end settings.

  Returns:
    `[N, *feature_shape(kind)]` float32.
  """
  fn = feature_fn(kind, cfg)
  if kind == 'waveform':
    return np.asarray(x, np.float32)
  n = x.shape[0]
  out = np.empty((n,) + feature_shape(kind, x.shape[1], cfg), np.float32)
  jfn = jax.jit(fn)
  for i in range(0, n, batch_size):
    chunk = np.asarray(x[i:i + batch_size], np.float32)
    m = chunk.shape[0]
    if m < batch_size and n > batch_size:
      chunk = np.pad(chunk, ((0, batch_size - m), (0, 0)))
    out[i:i + m] = np.asarray(jfn(chunk))[:m]
  return out
