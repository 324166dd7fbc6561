"""MCUNet (Lin et al., NeurIPS 2020) ImageNet backbones with a new head.

MobileNetV2-style inverted residuals found by TinyNAS. The two configurations
are MIT Han Lab's `mcunet-256kb-1mb_imagenet` (`mcunet-in2`) and
`mcunet-320kb-1mb_imagenet` (`mcunet-in3`) network configs: a 3x3 stride-2
stem (16 channels), 18 MBConv blocks `(expand t, channels c, stride s,
kernel k)` with ReLU6, a linear 1x1 projection and an identity shortcut when
stride is 1 and channels match, global average pool and a dense head. The
study transfer-learned them from ImageNet to CIFAR-10 (no pretrained weights
here: training starts from scratch).

Size with a 10-class head: 578,018 (320 kB) and 570,002 (256 kB) trainable
parameters (BN statistics add ~15.4k), within 1.5% / 1.8% of the study's
0.57M / 0.56M.
Inputs are 32x32 CIFAR images; `resolution` resizes them (bilinear,
differentiable) to the ImageNet-like resolutions the backbones were searched
at (176 for 320 kB, 160 for 256 kB) at a large FLOP cost.
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

# name -> (stem channels, blocks as (expand, channels, stride, kernel),
#          search resolution).
VARIANTS = {
    'mcunet-256kb': (16, (
        (1, 8, 1, 3), (3, 16, 2, 5), (6, 16, 1, 7), (5, 16, 1, 3),
        (5, 16, 1, 5), (5, 24, 2, 3), (6, 24, 1, 7), (6, 24, 1, 5),
        (4, 40, 2, 7), (5, 40, 1, 5), (5, 48, 1, 3), (5, 48, 1, 5),
        (4, 48, 1, 3), (6, 96, 2, 5), (4, 96, 1, 5), (3, 96, 1, 5),
        (4, 96, 1, 3), (5, 160, 1, 5)), 160),
    'mcunet-320kb': (16, (
        (1, 8, 1, 3), (3, 16, 2, 7), (5, 16, 1, 3), (5, 16, 1, 7),
        (4, 16, 1, 5), (5, 24, 2, 5), (5, 24, 1, 5), (5, 24, 1, 5),
        (5, 40, 2, 3), (6, 40, 1, 7), (4, 40, 1, 5), (5, 48, 1, 5),
        (5, 48, 1, 7), (5, 48, 1, 3), (6, 96, 2, 3), (5, 96, 1, 7),
        (4, 96, 1, 3), (5, 160, 1, 7)), 176),
}


class InvertedResidual(nn.Module):
  """MBConv: [1x1 expand + BN + ReLU6] -> kxk depthwise + BN + ReLU6 ->
  1x1 linear projection + BN, plus identity when shapes allow."""
  expand: int
  features: int
  stride: int
  kernel: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    def bn(y):
      return nn.BatchNorm(use_running_average=not train, momentum=0.9)(y)

    inputs = x
    hidden = x.shape[-1] * self.expand
    if self.expand != 1:
      x = jax.nn.relu6(bn(nn.Conv(hidden, (1, 1), use_bias=False)(x)))
    x = depthwise.DepthwiseConv((self.kernel, self.kernel), self.stride,
                                use_bias=False)(x)
    x = jax.nn.relu6(bn(x))
    x = bn(nn.Conv(self.features, (1, 1), use_bias=False)(x))
    if self.stride == 1 and inputs.shape[-1] == self.features:
      x = x + inputs
    return x


class MCUNet(conventions.InputSpec, nn.Module):
  """MCUNet backbone + dense head: `[B, H, W, 3]` -> logits `[B, L]`.

  Attributes:
    num_classes: number of logits.
    config: a key of `VARIANTS` ('mcunet-320kb' or 'mcunet-256kb').
    resolution: resize inputs to this square size first (None = as given).
    dropout: dropout before the head (training only).
    input_shape: `(H, W, C)`, optional; checked when set.
  """
  num_classes: int
  config: str = 'mcunet-320kb'
  resolution: int | None = None
  dropout: float = 0.0
  input_shape: tuple[int, ...] | None = None

  input_kind: ClassVar[str] = 'image'
  default_input_shape: ClassVar[tuple[int, ...]] = (32, 32, 3)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conventions.check_image_input('MCUNet', self.input_shape, x.shape)
    if self.resolution is not None and x.shape[1:3] != (self.resolution,) * 2:
      x = jax.image.resize(
          x, (x.shape[0], self.resolution, self.resolution, x.shape[3]),
          'bilinear')
    stem, blocks, _ = VARIANTS[self.config]
    x = nn.Conv(stem, (3, 3), strides=(2, 2), padding='SAME',
                use_bias=False)(x)
    x = jax.nn.relu6(
        nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
    for t, c, s, k in blocks:
      x = InvertedResidual(t, c, s, k)(x, train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


def _build(num_classes, config, resolution, dropout, input_shape):
  if config not in VARIANTS:
    raise ValueError(f'Unknown MCUNet config {config!r}. Valid: '
                     f'{", ".join(VARIANTS)}.')
  return MCUNet(num_classes=num_classes, config=config,
                resolution=options.optional_integer('resolution', resolution,
                                                    minimum=8),
                dropout=options.rate('dropout', dropout),
                input_shape=options.shape('input_shape', input_shape, 3))


@register('mcunet')
def mcunet(num_classes: int, config: str = 'mcunet-320kb',
           resolution: int | None = None, dropout: float = 0.0,
           input_shape: Sequence[int] | None = None) -> nn.Module:
  """MCUNet with `config` 'mcunet-320kb' (default) or 'mcunet-256kb'."""
  return _build(num_classes, config, resolution, dropout, input_shape)


@register('mcunet-320kb')
def mcunet_320kb(num_classes: int, resolution: int | None = None,
                 dropout: float = 0.0,
                 input_shape: Sequence[int] | None = None) -> nn.Module:
  """MCUNet for 320 kB SRAM / 1 MB flash (`mcunet-in3`)."""
  return _build(num_classes, 'mcunet-320kb', resolution, dropout, input_shape)


@register('mcunet-256kb')
def mcunet_256kb(num_classes: int, resolution: int | None = None,
                 dropout: float = 0.0,
                 input_shape: Sequence[int] | None = None) -> nn.Module:
  """MCUNet for 256 kB SRAM / 1 MB flash (`mcunet-in2`)."""
  return _build(num_classes, 'mcunet-256kb', resolution, dropout, input_shape)
