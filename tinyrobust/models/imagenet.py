"""The study's large image models: keras.applications architectures.

`efficientnet_b0`, `efficientnet_b4` (Tan and Le, ICML 2019),
`efficientnetv2_b0`, `efficientnetv2_b3` (Tan and Le, ICML 2021),
`resnet50` (He et al., CVPR 2016) and `vgg19` (Simonyan and Zisserman,
ICLR 2015), transcribed layer for layer from keras.applications (Keras 3:
`keras/src/applications/{efficientnet,efficientnet_v2,resnet,vgg19}.py`)
with `include_top=False`, global average pooling and a `Dense(num_classes)`
head, so keras.applications ImageNet weights import
(`tinyrobust.models.keras_import`).

Input convention (all six, like every tinyrobust image model): `[B, H, W,
3]` RGB in [0, 1], so eps means the same thing for every model. Inside the
forward pass (differentiable, so the attack perturbs the [0, 1] image):

1. resize to `image_size` (bilinear, `jax.image.resize`) when the input
   has another size; CIFAR-10's 32x32 images run at 32x32 by default
   (`image_size=None`), and ImageNet weights want 224 (B0, V2-B0), 380 (B4),
   300 (V2-B3);
2. the Keras preprocessing, on 0-255 pixels: EfficientNet: `x / 255`, then
   ImageNet mean/std normalisation with Keras' extra `1 / sqrt(std)` factor
   (keras-team/keras issue 49930, applied when Keras loads ImageNet
   weights); EfficientNetV2-B*: `x / 255`, ImageNet mean/std; ResNet50 and
   VGG19: caffe style (RGB to BGR, minus the ImageNet BGR mean, no
   scaling).

BatchNorm uses Keras' epsilons (1e-3; ResNet50 1.001e-5) and its running
statistics when `train=False`; dropout and stochastic depth (Keras'
`drop_connect_rate` 0.2, per-example residual drop) act only in training.
Parameter counts with a 10-class head (params + BN statistics): B0 4.06M,
B4 17.69M, V2-B0 5.93M, V2-B3 12.94M, ResNet50 23.61M, VGG19 20.03M.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tinyrobust.models import conventions
from tinyrobust.models import options
from tinyrobust.models.depthwise import DepthwiseConv
from tinyrobust.models.registry import register

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


def preprocess(x: jax.Array, style: str) -> jax.Array:
  """[0, 1] RGB -> the Keras model's input (see module doc)."""
  if style == 'caffe':
    return x[..., ::-1] * 255.0 - jnp.asarray(CAFFE_BGR_MEAN)
  mean, std = jnp.asarray(IMAGENET_MEAN), jnp.asarray(IMAGENET_STD)
  y = (x - mean) / std
  return y / jnp.sqrt(std) if style == 'efficientnet' else y


class _ImageNetModel(conventions.InputSpec):
  input_kind: ClassVar[str] = 'image'
  default_input_shape: ClassVar[tuple[int, ...]] = (32, 32, 3)

  def _prepare(self, x: jax.Array, name: str, style: str) -> jax.Array:
    conventions.check_image_input(name, self.input_shape, x.shape)
    if x.shape[-1] != 3:
      raise ValueError(f'{name} expects RGB images [B, H, W, 3], got '
                       f'{x.shape}.')
    size = self.image_size
    if size is not None and x.shape[1:3] != (size, size):
      x = jax.image.resize(x, (x.shape[0], size, size, 3), 'bilinear')
    return preprocess(x, style)


def _bn(train: bool, eps: float = 1e-3, momentum: float = 0.99):
  return nn.BatchNorm(use_running_average=not train, momentum=momentum,
                      epsilon=eps)


# ---------------------------------------------------------------- ResNet --


class ResNet50(_ImageNetModel, nn.Module):
  """keras.applications ResNet50 (v1, stride on the first 1x1 conv)."""
  num_classes: int
  image_size: int | None = None
  input_shape: tuple[int, ...] | None = None
  stacks: tuple[int, ...] = (3, 4, 6, 3)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = self._prepare(x, 'resnet50', 'caffe')
    bn = lambda y: nn.BatchNorm(use_running_average=not train, momentum=0.99,
                                epsilon=1.001e-5)(y)
    x = nn.Conv(64, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)))(x)
    x = nn.relu(bn(x))
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')
    for i, blocks in enumerate(self.stacks):
      f = 64 * 2 ** i
      for j in range(blocks):
        s = 2 if (j == 0 and i > 0) else 1
        if j == 0:
          shortcut = bn(nn.Conv(4 * f, (1, 1), strides=(s, s))(x))
        else:
          shortcut = x
        y = nn.relu(bn(nn.Conv(f, (1, 1), strides=(s, s))(x)))
        y = nn.relu(bn(nn.Conv(f, (3, 3), padding='SAME')(y)))
        y = bn(nn.Conv(4 * f, (1, 1))(y))
        x = nn.relu(shortcut + y)
    return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


class VGG19(_ImageNetModel, nn.Module):
  """keras.applications VGG19 convolutional base."""
  num_classes: int
  image_size: int | None = None
  input_shape: tuple[int, ...] | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = self._prepare(x, 'vgg19', 'caffe')
    for f, n in ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4)):
      for _ in range(n):
        x = nn.relu(nn.Conv(f, (3, 3), padding='SAME')(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2), padding='VALID')
    return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


# ---------------------------------------------------------- EfficientNet --

# (kernel, repeats, filters_in, filters_out, expand, stride, se, fused)
EFFICIENTNET_V1_BLOCKS = (
    (3, 1, 32, 16, 1, 1, 0.25, False), (3, 2, 16, 24, 6, 2, 0.25, False),
    (5, 2, 24, 40, 6, 2, 0.25, False), (3, 3, 40, 80, 6, 2, 0.25, False),
    (5, 3, 80, 112, 6, 1, 0.25, False), (5, 4, 112, 192, 6, 2, 0.25, False),
    (3, 1, 192, 320, 6, 1, 0.25, False))
EFFICIENTNET_V2_B_BLOCKS = (
    (3, 1, 32, 16, 1, 1, 0.0, True), (3, 2, 16, 32, 4, 2, 0.0, True),
    (3, 2, 32, 48, 4, 2, 0.0, True), (3, 3, 48, 96, 4, 2, 0.25, False),
    (3, 5, 96, 112, 6, 1, 0.25, False), (3, 8, 112, 192, 6, 2, 0.25, False))
# name -> (version, width, depth, ImageNet resolution)
EFFICIENTNETS = {
    'efficientnet_b0': (1, 1.0, 1.0, 224), 'efficientnet_b4': (1, 1.4, 1.8, 380),
    'efficientnetv2_b0': (2, 1.0, 1.0, 224),
    'efficientnetv2_b3': (2, 1.2, 1.4, 300),
}


def round_filters(filters: float, width: float, version: int,
                  divisor: int = 8) -> int:
  """Keras' channel rounding (v1 adds a divisor after a >10% round-down)."""
  filters *= width
  new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
  if version == 1 and new < 0.9 * filters:
    new += divisor
  return int(new)


def _drop_path(x, rate: float, train: bool, module: nn.Module):
  """Stochastic depth: drop the residual branch per example (training)."""
  if not train or rate <= 0.0:
    return x
  keep = jax.random.bernoulli(module.make_rng('dropout'), 1.0 - rate,
                              (x.shape[0], 1, 1, 1))
  return jnp.where(keep, x / (1.0 - rate), 0.0)


class _MBConv(nn.Module):
  """EfficientNet (fused or depthwise) inverted-residual block."""
  kernel: int
  f_in: int
  f_out: int
  expand: int
  stride: int
  se: float
  fused: bool
  drop: float
  bn_momentum: float

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool) -> jax.Array:
    bn = lambda y: _bn(train, momentum=self.bn_momentum)(y)
    f = self.f_in * self.expand
    k, s = (self.kernel,) * 2, (self.stride,) * 2
    x = inputs
    if self.expand != 1:
      x = nn.Conv(f, k if self.fused else (1, 1), strides=s if self.fused
                  else (1, 1), padding='SAME', use_bias=False)(x)
      x = nn.swish(bn(x))
    if not self.fused:
      x = DepthwiseConv(k, strides=self.stride, use_bias=False)(x)
      x = nn.swish(bn(x))
    if 0 < self.se <= 1:
      se = jnp.mean(x, axis=(1, 2), keepdims=True)
      se = nn.swish(nn.Conv(max(1, int(self.f_in * self.se)), (1, 1))(se))
      x = x * nn.sigmoid(nn.Conv(f, (1, 1))(se))
    one = self.fused and self.expand == 1
    x = nn.Conv(self.f_out, k if one else (1, 1), strides=s if one else (1, 1),
                padding='SAME', use_bias=False)(x)
    x = bn(x)
    if one:
      x = nn.swish(x)
    if self.stride == 1 and self.f_in == self.f_out:
      x = _drop_path(x, self.drop, train, self) + inputs
    return x


class EfficientNet(_ImageNetModel, nn.Module):
  """keras.applications EfficientNet B0-B7 / EfficientNetV2 B0-B3 base."""
  num_classes: int
  variant: str = 'efficientnet_b0'
  image_size: int | None = None
  input_shape: tuple[int, ...] | None = None
  drop_connect_rate: float = 0.2
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    version, width, depth, _ = EFFICIENTNETS[self.variant]
    x = self._prepare(x, self.variant,
                      'efficientnet' if version == 1 else 'imagenet')
    momentum = 0.99 if version == 1 else 0.9
    blocks = EFFICIENTNET_V1_BLOCKS if version == 1 else \
        EFFICIENTNET_V2_B_BLOCKS
    rf = lambda n: round_filters(n, width, version)
    x = nn.Conv(rf(blocks[0][2]), (3, 3), strides=(2, 2), padding='SAME',
                use_bias=False)(x)
    x = nn.swish(_bn(train, momentum=momentum)(x))
    repeats = [int(math.ceil(depth * b[1])) for b in blocks]
    b, total = 0, float(sum(b[1] for b in blocks) if version == 2
                        else sum(repeats))
    for (k, _, f_in, f_out, e, s, se, fused), n in zip(blocks, repeats):
      f_in, f_out = rf(f_in), rf(f_out)
      for j in range(n):
        x = _MBConv(k, f_in if j == 0 else f_out, f_out, e, s if j == 0 else 1,
                    se, fused, self.drop_connect_rate * b / total,
                    momentum)(x, train)
        b += 1
    x = nn.Conv(rf(1280), (1, 1), padding='SAME', use_bias=False)(x)
    x = nn.swish(_bn(train, momentum=momentum)(x))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


# -------------------------------------------------------------- registry --


def _common(image_size, input_shape) -> dict[str, Any]:
  return {'image_size': options.optional_integer('image_size', image_size,
                                                 minimum=32),
          'input_shape': options.shape('input_shape', input_shape, 3)}


def _efficientnet(variant: str):
  def build(num_classes: int, image_size: int | None = None,
            input_shape: Sequence[int] | None = None,
            drop_connect_rate: float = 0.2, dropout: float = 0.0
            ) -> nn.Module:
    return EfficientNet(num_classes=num_classes, variant=variant,
                        drop_connect_rate=options.rate('drop_connect_rate',
                                                       drop_connect_rate),
                        dropout=options.rate('dropout', dropout),
                        **_common(image_size, input_shape))
  build.__name__ = variant
  build.__doc__ = (f'keras.applications {variant} base + Dense head '
                   f'(ImageNet resolution {EFFICIENTNETS[variant][3]}).')
  return build


for _name in EFFICIENTNETS:
  register(_name)(_efficientnet(_name))


@register('resnet50')
def resnet50(num_classes: int, image_size: int | None = None,
             input_shape: Sequence[int] | None = None) -> nn.Module:
  """keras.applications ResNet50 base + Dense head (23.61M params, 10 cl.)."""
  return ResNet50(num_classes=num_classes, **_common(image_size, input_shape))


@register('vgg19')
def vgg19(num_classes: int, image_size: int | None = None,
          input_shape: Sequence[int] | None = None) -> nn.Module:
  """keras.applications VGG19 base + Dense head (20.03M params, 10 cl.)."""
  return VGG19(num_classes=num_classes, **_common(image_size, input_shape))
