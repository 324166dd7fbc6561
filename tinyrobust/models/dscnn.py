"""DS-CNN: the MLPerf Tiny keyword-spotting reference model.

Transcribes `mlcommons/tiny` `v0.1/training/keyword_spotting/keras_model.py`
(`ds_cnn`): on 49x10 MFCC input, Conv2D(64, (10, 4), stride 2, same) + BN +
ReLU + Dropout(0.2); four depthwise-separable blocks (3x3 depthwise + BN +
ReLU, 1x1 conv 64 + BN + ReLU); Dropout(0.4); average pool over the 25x5
map; dense classifier. Convolutions keep their biases like Keras; the
depthwise ones use `depthwise.DepthwiseConv` (same maths, fast CPU
gradient). With 12 classes: 24,908 parameters counting the BN moving
statistics (as Keras' `count_params` does), 23,756 trainable.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tinyrobust.models import conventions
from tinyrobust.models import options
from tinyrobust.models import depthwise
from tinyrobust.models.registry import register


class DSCNN(conventions.InputSpec, nn.Module):
  """MLPerf Tiny DS-CNN: `[B, T, F]` or `[B, T, F, 1]` -> logits `[B, L]`.

  Attributes:
    num_classes: number of logits (12 for the MLPerf Tiny KWS task).
    filters: channels of every layer (64 in the reference).
    num_blocks: depthwise-separable blocks (4 in the reference).
    first_kernel: kernel of the first convolution, (time, frequency).
    input_shape: `(T, F)` or `(T, F, 1)`, optional; checked when set.
  """
  num_classes: int
  filters: int = 64
  num_blocks: int = 4
  first_kernel: tuple[int, int] = (10, 4)
  input_shape: tuple[int, ...] | None = None

  input_kind: ClassVar[str] = 'spectrogram'
  default_input_shape: ClassVar[tuple[int, ...]] = (49, 10)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if x.ndim == 3:
      x = x[..., None]
    if x.ndim != 4 or x.shape[-1] != 1:
      raise ValueError(f'DS-CNN expects [B, T, F] or [B, T, F, 1], got '
                       f'{x.shape}.')
    if self.input_shape is not None and x.shape[1:3] != self.input_shape[:2]:
      raise ValueError(f'DS-CNN built for input_shape={self.input_shape}, '
                       f'got x of shape {x.shape}.')

    def bn(y):
      return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                          epsilon=1e-3)(y)  # Keras epsilon

    f = self.filters
    x = nn.Conv(f, self.first_kernel, strides=(2, 2), padding='SAME')(x)
    x = nn.relu(bn(x))
    x = nn.Dropout(0.2, deterministic=not train)(x)
    for _ in range(self.num_blocks):
      x = depthwise.DepthwiseConv((3, 3))(x)
      x = nn.relu(bn(x))
      x = nn.Conv(f, (1, 1), padding='SAME')(x)
      x = nn.relu(bn(x))
    x = nn.Dropout(0.4, deterministic=not train)(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes)(x)


@register('dscnn', 'ds-cnn')
def dscnn(num_classes: int, filters: int = 64, num_blocks: int = 4,
          first_kernel: Sequence[int] = (10, 4),
          input_shape: Sequence[int] | None = None) -> nn.Module:
  """MLPerf Tiny DS-CNN (defaults = the reference, ~24.9k params)."""
  return DSCNN(num_classes=num_classes,
               filters=options.integer('filters', filters),
               num_blocks=options.integer('num_blocks', num_blocks,
                                          minimum=0),
               first_kernel=options.int_sequence('first_kernel', first_kernel,
                                                 length=2),
               input_shape=options.shape('input_shape', input_shape, (2, 3)))
