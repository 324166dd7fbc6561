"""The study's large activity-recognition models on raw AURITUS windows.

Architectures transcribed from the study's HAR notebook (Saha et al.,
"Auritus", IMWUT 2022, as used by the TinyML security study; repository
`swapnilsayansaha/tinyml_security`, `Model Training/Human Activity
Recognition`), where the Keras input is `[B, dim=6, win_len=550, 1]`:

* `har_cnn`: six Conv2D(128, (1, 10), relu, same); BatchNorm after convs 2,
  3, 5 and 6; MaxPool (1, 3) after conv 3 and (1, 2) after convs 5 and 6;
  Dropout 0.5; Flatten; Dense(64, relu); BatchNorm; Dropout 0.5;
  Dense(classes). 3,036,041 parameters (9 classes, with BN statistics).
* `har_cnn_lstm`: the same convolution stack, permuted to time-major
  `[45, 6 * 128]`, a bidirectional LSTM(128), Dense(classes). 1,744,137.
* `har_lstm`: LSTM(128, sequences), Dropout 0.5, LSTM(128), Dropout 0.5,
  Dense(classes) on `[550, 6]`. 201,865.

Input convention (all three): `[B, T, C]` windows (T = 550 samples at
100 Hz, C = 6: acc x, y, z in g and gyro x, y, z in deg/s, standardised per
channel with training statistics in the configs), the layout of every
tinyrobust sequence model. The convolutional models transpose to Keras'
`[B, C, T, 1]` inside the forward pass, so Keras weights import unchanged.
BatchNorm follows Keras (epsilon 1e-3, momentum 0.99) and uses running
statistics with `train=False`; dropout is off then.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tinyrobust.models import conventions
from tinyrobust.models import options
from tinyrobust.models import recurrent
from tinyrobust.models.registry import register

# (batch-norm after the conv, max-pool width after it) for the six convs.
CONV_STACK = ((False, 1), (True, 1), (True, 3), (False, 1), (True, 2),
              (True, 2))


def keras_bn(train: bool, name: str | None = None) -> nn.BatchNorm:
  """Keras' BatchNormalization defaults (epsilon 1e-3, momentum 0.99)."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.99,
                      epsilon=1e-3, name=name)


def _check_sequence(name: str, input_shape, x: jax.Array) -> None:
  if x.ndim != 3:
    raise ValueError(f'{name} expects windows [B, T, C], got {x.shape}.')
  conventions.check_built_shape(name, input_shape, tuple(x.shape[1:]),
                                tuple(x.shape))


class _ConvStack(nn.Module):
  """The six-conv feature extractor on `[B, C, T, 1]` -> `[B, C, T', f]`."""
  filters: int = 128
  kernel: int = 10

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for bn, pool in CONV_STACK:
      x = nn.relu(nn.Conv(self.filters, (1, self.kernel), padding='SAME')(x))
      if bn:
        x = keras_bn(train)(x)
      if pool > 1:
        x = nn.max_pool(x, (1, pool), strides=(1, pool), padding='VALID')
    return x


class HarConvNet(conventions.InputSpec, nn.Module):
  """The study's HAR CNN (`head='dense'`) and CNN-LSTM (`head='bilstm'`):
  `[B, T, C]` -> logits `[B, L]` (see the module doc)."""
  num_classes: int
  head: str = 'dense'
  filters: int = 128
  units: int = 64  # Dense(64) of the CNN; LSTM(128) of the CNN-LSTM
  input_shape: tuple[int, ...] | None = None

  input_kind: ClassVar[str] = 'sequence'
  default_input_shape: ClassVar[tuple[int, ...]] = (550, 6)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    name = 'har_cnn' if self.head == 'dense' else 'har_cnn_lstm'
    _check_sequence(name, self.input_shape, x)
    h = _ConvStack(self.filters)(jnp.swapaxes(x, 1, 2)[..., None], train)
    if self.head == 'dense':
      h = nn.Dropout(0.5, deterministic=not train)(h)
      h = nn.relu(nn.Dense(self.units)(h.reshape(h.shape[0], -1)))
      h = keras_bn(train)(h)
      h = nn.Dropout(0.5, deterministic=not train)(h)
    else:
      b, c, t, f = h.shape
      h = jnp.transpose(h, (0, 2, 1, 3)).reshape(b, t, c * f)  # Permute
      h = recurrent.Bidirectional(self.units, 'lstm')(h)
    return nn.Dense(self.num_classes)(h)


class HarLSTM(conventions.InputSpec, nn.Module):
  """The study's two-layer HAR LSTM: `[B, T, C]` -> logits `[B, L]`."""
  num_classes: int
  units: int = 128
  input_shape: tuple[int, ...] | None = None

  input_kind: ClassVar[str] = 'sequence'
  default_input_shape: ClassVar[tuple[int, ...]] = (550, 6)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    _check_sequence('har_lstm', self.input_shape, x)
    h = recurrent.LSTM(self.units, return_sequences=True)(x)
    h = nn.Dropout(0.5, deterministic=not train)(h)
    h = recurrent.LSTM(self.units)(h)
    h = nn.Dropout(0.5, deterministic=not train)(h)
    return nn.Dense(self.num_classes)(h)


def _shape(input_shape):
  return (None if input_shape is None else
          options.shape('input_shape', input_shape, 2))


@register('har_cnn')
def har_cnn(num_classes: int, filters: int = 128, hidden: int = 64,
            input_shape: Sequence[int] | None = None) -> nn.Module:
  """The study's HAR CNN (defaults: 3,036,041 params with 9 classes)."""
  return HarConvNet(num_classes=num_classes, head='dense',
                    filters=options.integer('filters', filters),
                    units=options.integer('hidden', hidden),
                    input_shape=_shape(input_shape))


@register('har_cnn_lstm')
def har_cnn_lstm(num_classes: int, filters: int = 128, units: int = 128,
                 input_shape: Sequence[int] | None = None) -> nn.Module:
  """The study's HAR CNN-LSTM (defaults: 1,744,137 params, 9 classes)."""
  return HarConvNet(num_classes=num_classes, head='bilstm',
                    filters=options.integer('filters', filters),
                    units=options.integer('units', units),
                    input_shape=_shape(input_shape))


@register('har_lstm')
def har_lstm(num_classes: int, units: int = 128,
             input_shape: Sequence[int] | None = None) -> nn.Module:
  """The study's HAR LSTM (defaults: 201,865 params with 9 classes)."""
  return HarLSTM(num_classes=num_classes,
                 units=options.integer('units', units),
                 input_shape=_shape(input_shape))
