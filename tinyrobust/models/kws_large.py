"""The study's large keyword-spotting models (Hello Edge baselines).

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

Input convention: `[B, 49, 10]` (or `[B, 49, 10, 1]`) MFCCs, time first, in
the units the dataset produces (eps in MFCC units, as in the study).
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import flax.linen as nn
import jax

from tinyrobust.models import conventions
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
