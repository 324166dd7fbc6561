"""ResNet8: the MLPerf Tiny image-classification reference model.

Transcribes `mlcommons/tiny` `benchmark/training/image_classification/
keras_model.py` (`resnet_v1_eembc`): Conv 3x3 (16) + BN + ReLU, then three
residual stacks of 16, 32, 64 filters (two 3x3 convs with BN; stacks 2 and
3 downsample with stride 2 and a strided 1x1 conv on the identity path),
global average pool, dense classifier. Convolutions keep their biases and
use He-normal init like the Keras reference. With 10 classes: 78,666
parameters counting the BN moving statistics (Keras `count_params`),
78,186 trainable.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tinyrobust.models import conventions
from tinyrobust.models import options
from tinyrobust.models.registry import register


class ResNet8(conventions.InputSpec, nn.Module):
  """MLPerf Tiny ResNet8: images `[B, H, W, C]` -> logits `[B, L]`.

  Attributes:
    num_classes: number of logits.
    filters: filters of the three stacks (16, 32, 64 in the reference).
    input_shape: `(H, W, C)`, optional; checked when set.
  """
  num_classes: int
  filters: tuple[int, ...] = (16, 32, 64)
  input_shape: tuple[int, ...] | None = None

  input_kind: ClassVar[str] = 'image'
  default_input_shape: ClassVar[tuple[int, ...]] = (32, 32, 3)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conventions.check_image_input('ResNet8', self.input_shape, x.shape)
    he = nn.initializers.he_normal()

    def conv(y, f, k=3, s=1):
      return nn.Conv(f, (k, k), strides=(s, s), padding='SAME',
                     kernel_init=he)(y)

    def bn(y):
      return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                          epsilon=1e-3)(y)  # Keras epsilon

    x = nn.relu(bn(conv(x, self.filters[0])))
    for i, f in enumerate(self.filters):
      stride = 1 if i == 0 else 2
      y = nn.relu(bn(conv(x, f, s=stride)))
      y = bn(conv(y, f))
      if stride != 1 or x.shape[-1] != f:
        x = conv(x, f, k=1, s=stride)
      x = nn.relu(x + y)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=he)(x)


@register('resnet8')
def resnet8(num_classes: int, filters: Sequence[int] = (16, 32, 64),
            input_shape: Sequence[int] | None = None) -> nn.Module:
  """MLPerf Tiny ResNet8 (defaults = the reference, ~78.7k params)."""
  return ResNet8(num_classes=num_classes,
                 filters=options.int_sequence('filters', filters),
                 input_shape=options.shape('input_shape', input_shape, 3))
