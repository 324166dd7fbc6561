"""The study's large keyword-spotting models (Hello Edge, attention RNN).

Zhang et al., "Hello Edge: Keyword Spotting on Microcontrollers" (2017),
architectures as in ARM's `ML-KWS-for-MCU` `models.py` and the study's
Keras notebooks, on the MLPerf Tiny front-end: 49 frames x 10 MFCCs
(1 s at 16 kHz, 30 ms windows, 20 ms stride, 40 mel bins), 12 classes.

* `kws_cnn`: Conv2D(64, (20, 8), relu, valid), Dropout 0.2, MaxPool 2x2
  (same), Conv2D(64, (10, 2), relu, valid), Dropout 0.2, MaxPool 2x2
  (same), Flatten, Dense(classes). 94,604 parameters.
* `kws_gru`: GRU(400) over the 49 frames (Keras `reset_after=True`),
  Dense(classes). 499,212 parameters.
* `kws_lstm`: LSTM(500) over the 49 frames, Dense(classes). 1,028,012.
* `attention_rnn`: de Andrade et al., "A neural attention model for speech
  command recognition" (2018), `AttRNNSpeechModel`: Conv2D(10, (5, 1),
  relu, same), BatchNorm, Conv2D(1, (5, 1), relu, same), BatchNorm, two
  Bidirectional(LSTM(64, return_sequences)), query = Dense(128) of the last
  step, dot-product attention over time (softmax scores, weighted sum),
  Dense(64, relu), Dense(32), Dense(classes). On log-mel frames `[B, T, M]`:
  the study's 80 mel bins give 200,455 variables (trainable + BatchNorm
  statistics, the count this registry reports everywhere); the study's
  1.29M also counts kapre's frozen STFT kernels (n_dft 1024, hop 128) of
  its on-graph front-end, which here is `tinyrobust.data.audio.log_mel`
  outside the model (the signal-space threat model puts it back in the
  attacked function). With this toolkit's Speech Commands log-mel features
  (`features='logmel'`, `[B, 49, 40]`): 179,975.

Input convention: `[B, 49, 10]` (or `[B, 49, 10, 1]`) MFCCs, time first, in
the units the dataset produces (eps in MFCC units, as in the study).
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tinyrobust.models import conventions
from tinyrobust.models import har_large
from tinyrobust.models import options
from tinyrobust.models import recurrent
from tinyrobust.models.registry import register


def _frames(name: str, input_shape, x: jax.Array) -> jax.Array:
  """`[B, T, F]` MFCC frames (a trailing channel axis of 1 is dropped)."""
  if x.ndim == 4 and x.shape[-1] == 1:
    x = x[..., 0]
  if x.ndim != 3:
    raise ValueError(f'{name} expects MFCCs [B, T, F] or [B, T, F, 1], got '
                     f'{x.shape}.')
  if input_shape is not None:
    conventions.check_built_shape(name, tuple(input_shape)[:2],
                                  tuple(x.shape[1:3]), tuple(x.shape))
  return x


def _same_pool(x: jax.Array) -> jax.Array:
  """Keras MaxPooling2D((2, 2), padding='same')."""
  return nn.max_pool(x, (2, 2), strides=(2, 2), padding='SAME')


class KwsCNN(conventions.InputSpec, nn.Module):
  """Hello Edge CNN: `[B, 49, 10]` -> logits `[B, L]`."""
  num_classes: int
  filters: int = 64
  input_shape: tuple[int, ...] | None = None

  input_kind: ClassVar[str] = 'spectrogram'
  default_input_shape: ClassVar[tuple[int, ...]] = (49, 10)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = _frames('kws_cnn', self.input_shape, x)[..., None]
    for kernel in ((20, 8), (10, 2)):
      x = nn.relu(nn.Conv(self.filters, kernel, padding='VALID')(x))
      x = nn.Dropout(0.2, deterministic=not train)(x)
      x = _same_pool(x)
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


class KwsRNN(conventions.InputSpec, nn.Module):
  """Hello Edge GRU / LSTM: `[B, 49, 10]` -> logits `[B, L]`."""
  num_classes: int
  units: int
  cell: str = 'lstm'
  input_shape: tuple[int, ...] | None = None

  input_kind: ClassVar[str] = 'spectrogram'
  default_input_shape: ClassVar[tuple[int, ...]] = (49, 10)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = _frames(f'kws_{self.cell}', self.input_shape, x)
    layer = {'lstm': recurrent.LSTM, 'gru': recurrent.GRU}[self.cell]
    return nn.Dense(self.num_classes)(layer(self.units)(x))


class AttentionRNN(conventions.InputSpec, nn.Module):
  """de Andrade et al.'s attention RNN: log-mel `[B, T, M]` -> logits."""
  num_classes: int
  units: int = 64
  input_shape: tuple[int, ...] | None = None

  input_kind: ClassVar[str] = 'spectrogram'
  default_input_shape: ClassVar[tuple[int, ...]] = (49, 40)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = _frames('attention_rnn', self.input_shape, x)[..., None]
    for filters in (10, 1):  # (5, 1) kernels: along time only
      x = nn.relu(nn.Conv(filters, (5, 1), padding='SAME')(x))
      x = har_large.keras_bn(train)(x)
    x = x[..., 0]
    for _ in range(2):
      x = recurrent.Bidirectional(self.units, 'lstm',
                                  return_sequences=True)(x)
    query = nn.Dense(2 * self.units)(x[:, -1])
    scores = jax.nn.softmax(jnp.einsum('bd,btd->bt', query, x), axis=-1)
    x = jnp.einsum('bt,btd->bd', scores, x)
    x = nn.relu(nn.Dense(64)(x))
    x = nn.Dense(32)(x)
    return nn.Dense(self.num_classes)(x)


def _shape(input_shape):
  return (None if input_shape is None else
          options.shape('input_shape', input_shape, (2, 3)))


@register('kws_cnn')
def kws_cnn(num_classes: int, filters: int = 64,
            input_shape: Sequence[int] | None = None) -> nn.Module:
  """Hello Edge CNN (defaults: 94,604 params with 12 classes)."""
  return KwsCNN(num_classes=num_classes,
                filters=options.integer('filters', filters),
                input_shape=_shape(input_shape))


@register('kws_gru')
def kws_gru(num_classes: int, units: int = 400,
            input_shape: Sequence[int] | None = None) -> nn.Module:
  """Hello Edge GRU (defaults: 499,212 params with 12 classes)."""
  return KwsRNN(num_classes=num_classes, cell='gru',
                units=options.integer('units', units),
                input_shape=_shape(input_shape))


@register('kws_lstm')
def kws_lstm(num_classes: int, units: int = 500,
             input_shape: Sequence[int] | None = None) -> nn.Module:
  """Hello Edge LSTM (defaults: 1,028,012 params with 12 classes)."""
  return KwsRNN(num_classes=num_classes, cell='lstm',
                units=options.integer('units', units),
                input_shape=_shape(input_shape))


@register('attention_rnn')
def attention_rnn(num_classes: int, units: int = 64,
                  input_shape: Sequence[int] | None = None) -> nn.Module:
  """de Andrade et al.'s attention RNN (200,455 variables on 80 mel bins
  with 12 classes; 179,975 on this toolkit's 40-bin log-mel features)."""
  return AttentionRNN(num_classes=num_classes,
                      units=options.integer('units', units),
                      input_shape=_shape(input_shape))
