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
3]` RGB in [0, 1] (float32), so eps means the same thing for every model.
Inside the forward pass (differentiable, so the attack perturbs the [0, 1]
image itself):

1. resize to `image_size` x `image_size` (`jax.image.resize`, bilinear;
   antialiased when shrinking) when the input has another size. CIFAR-10's
   32x32 images run at 32x32 by default (`image_size=None`); ImageNet
   weights were trained at 224 (B0, V2-B0), 380 (B4), 300 (V2-B3) and 224
   (ResNet50, VGG19).
2. the preprocessing keras.applications puts in (EfficientNet) or in front
   of (ResNet50, VGG19) the model, on x255 = 255 x:
   * EfficientNet B0/B4 and V2-B0/V2-B3: `(x255 / 255 - mean) / std` with
     ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).
     V2: `Rescaling(1/255)` + `Normalization(mean, variance=std**2)`
     (`include_preprocessing=True`). V1: `Rescaling(1/255)` +
     `Normalization` whose ImageNet weights file stores variance = std
     (tensorflow/tensorflow issue 49930) + the `Rescaling(1/sqrt(std))`
     Keras adds when `weights='imagenet'`: the product is the same
     `(x - mean) / std`. (A V1 model built with `weights=None` keeps an
     unadapted identity Normalization, so a checkpoint trained from
     scratch that way expects `x255 / 255` and does not import
     faithfully; `import_image` says so where it can see the layer.)
   * ResNet50, VGG19 (`imagenet_utils.preprocess_input`, caffe mode): RGB
     to BGR, minus the ImageNet BGR mean (103.939, 116.779, 123.68), no
     scaling.

BatchNorm uses Keras' epsilons (1e-3; ResNet50 1.001e-5) and momenta (0.99;
EfficientNetV2 0.9; option `bn_momentum` overrides it, e.g. 0.9 for short
runs whose running statistics must keep up with the weights) and its
running statistics when `train=False`; dropout and stochastic depth (Keras'
`drop_connect_rate` 0.2, per-example residual drop) act only in training. Parameter counts with a 10-class head (params +
BN statistics, measured): B0 4,062,374, B4 17,691,746, V2-B0 5,932,122,
V2-B3 12,945,992, ResNet50 23,608,202, VGG19 20,029,514 (Keras' totals
minus its Normalization layer's 7 statistics; the study's table: 4.07M,
17.70M, 5.93M, 12.95M, 23.62M, 20.03M).

Transfer learning: `keras_weights=<path>` (a keras.applications
`*_notop.h5` ImageNet file, or any Keras model of the same architecture)
is loaded by the trainer's `data_init` hook right after `init`: the
backbone takes the Keras weights, the Dense head keeps its random init
unless the file has a head of the same shape
(`tinyrobust.models.import_image`).
"""

from __future__ import annotations

import math
import functools
import os
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tinyrobust.models import conventions
from tinyrobust.models import options
from tinyrobust.models import small_conv
from tinyrobust.models.depthwise import DepthwiseConv
from tinyrobust.models.registry import register

# Every convolution of these models: XLA's, except the patch form on small
# feature maps on CPU (`small_conv`: VGG19's and ResNet50's last blocks at
# 32x32 inputs); same parameters, so checkpoints and Keras weights load.
Conv = functools.partial(nn.Conv,
                         conv_general_dilated=small_conv.conv_general_dilated)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


PREPROCESSING = ('caffe', 'imagenet')


def preprocess(x: jax.Array, style: str) -> jax.Array:
  """[0, 1] RGB -> what the Keras backbone sees (module doc, step 2).

  Args:
    x: `[..., 3]` RGB in [0, 1].
    style: 'imagenet' (EfficientNet V1/V2: `(x - mean) / std`) or 'caffe'
      (ResNet50, VGG19: BGR, 0-255 minus the BGR mean).
  """
  if style == 'caffe':
    return x[..., ::-1] * 255.0 - jnp.asarray(CAFFE_BGR_MEAN)
  if style != 'imagenet':
    raise ValueError(f'Unknown preprocessing style {style!r}. Valid: '
                     f'{", ".join(PREPROCESSING)}.')
  return (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


class _ImageNetModel(conventions.InputSpec):
  """Shared input handling and the `keras_weights` `data_init` hook."""
  input_kind: ClassVar[str] = 'image'
  default_input_shape: ClassVar[tuple[int, ...]] = (32, 32, 3)

  @nn.nowrap
  def data_init(self, variables: dict[str, Any], x_train: Any, key: Any,
                y_train: Any = None) -> dict[str, Any]:
    """Trainer hook: loads `keras_weights` (if set) into `variables`.

    Args:
      variables: output of `init` (the head keeps these values when the
        Keras file has no head of the same shape).
      x_train, key, y_train: unused (the `TrainHooks` signature).

    Returns:
      `variables`, with every backbone array from the Keras file.
    """
    del x_train, key, y_train
    if self.keras_weights is None:
      return variables
    return import_image.load_into(self, self.keras_weights, variables)

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
  """ResNet50 (He et al., "Deep residual learning for image recognition",
  CVPR 2016) as keras.applications builds it (`applications/resnet.py`,
  `stack1`/`block1`: v1 bottlenecks, stride on the first 1x1 conv,
  projection shortcut on the first block of each stack, BN epsilon
  1.001e-5), base `include_top=False`, global average pooling,
  `Dense(num_classes)`.

  Input: `[B, H, W, 3]` RGB in [0, 1]; resized to `image_size` if set, then
  caffe preprocessing (BGR, 0-255 minus the ImageNet mean) in the model.
  """
  num_classes: int
  image_size: int | None = None
  input_shape: tuple[int, ...] | None = None
  keras_weights: str | None = None
  bn_momentum: float | None = None
  stacks: tuple[int, ...] = (3, 4, 6, 3)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = self._prepare(x, 'resnet50', 'caffe')
    momentum = 0.99 if self.bn_momentum is None else self.bn_momentum
    bn = lambda y: _bn(train, 1.001e-5, momentum)(y)
    x = Conv(64, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)))(x)
    x = nn.relu(bn(x))
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')
    for i, blocks in enumerate(self.stacks):
      f = 64 * 2 ** i
      for j in range(blocks):
        s = 2 if (j == 0 and i > 0) else 1
        if j == 0:
          shortcut = bn(Conv(4 * f, (1, 1), strides=(s, s))(x))
        else:
          shortcut = x
        y = nn.relu(bn(Conv(f, (1, 1), strides=(s, s))(x)))
        y = nn.relu(bn(Conv(f, (3, 3), padding='SAME')(y)))
        y = bn(Conv(4 * f, (1, 1))(y))
        x = nn.relu(shortcut + y)
    return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


class VGG19(_ImageNetModel, nn.Module):
  """VGG19 (Simonyan and Zisserman, "Very deep convolutional networks for
  large-scale image recognition", ICLR 2015) as keras.applications builds it
  (`applications/vgg19.py`: 16 3x3 ReLU convs with biases in five blocks,
  2x2 max pooling, no BN), base `include_top=False`, global average
  pooling, `Dense(num_classes)`.

  Input: `[B, H, W, 3]` RGB in [0, 1]; resized to `image_size` if set, then
  caffe preprocessing (BGR, 0-255 minus the ImageNet mean) in the model.
  """
  num_classes: int
  image_size: int | None = None
  input_shape: tuple[int, ...] | None = None
  keras_weights: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = self._prepare(x, 'vgg19', 'caffe')
    for f, n in ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4)):
      for _ in range(n):
        x = nn.relu(Conv(f, (3, 3), padding='SAME')(x))
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
    'efficientnet_b0': (1, 1.0, 1.0, 224),
    'efficientnet_b4': (1, 1.4, 1.8, 380),
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
      x = Conv(f, k if self.fused else (1, 1), strides=s if self.fused
                  else (1, 1), padding='SAME', use_bias=False)(x)
      x = nn.swish(bn(x))
    if not self.fused:
      x = DepthwiseConv(k, strides=self.stride, use_bias=False)(x)
      x = nn.swish(bn(x))
    if 0 < self.se <= 1:
      se = jnp.mean(x, axis=(1, 2), keepdims=True)
      se = nn.swish(Conv(max(1, int(self.f_in * self.se)), (1, 1))(se))
      x = x * nn.sigmoid(Conv(f, (1, 1))(se))
    one = self.fused and self.expand == 1
    x = Conv(self.f_out, k if one else (1, 1), strides=s if one else (1, 1),
                padding='SAME', use_bias=False)(x)
    x = bn(x)
    if one:
      x = nn.swish(x)
    if self.stride == 1 and self.f_in == self.f_out:
      x = _drop_path(x, self.drop, train, self) + inputs
    return x


class EfficientNet(_ImageNetModel, nn.Module):
  """EfficientNet B0/B4 (Tan and Le, "EfficientNet: rethinking model scaling
  for convolutional neural networks", ICML 2019) and EfficientNetV2 B0/B3
  (Tan and Le, "EfficientNetV2: smaller models and faster training", ICML
  2021) as keras.applications builds them (`applications/efficientnet.py`,
  `efficientnet_v2.py`: MBConv/fused-MBConv blocks with squeeze-excite,
  swish, BN epsilon 1e-3, Keras' filter/depth rounding and linearly rising
  drop-connect rate), base `include_top=False`, global average pooling,
  dropout `dropout` (default 0: Keras' top dropout is not part of the
  base) and `Dense(num_classes)`.

  Input: `[B, H, W, 3]` RGB in [0, 1]; resized to `image_size` if set, then
  ImageNet mean/std normalisation in the model (module doc).
  """
  num_classes: int
  variant: str = 'efficientnet_b0'
  image_size: int | None = None
  input_shape: tuple[int, ...] | None = None
  keras_weights: str | None = None
  bn_momentum: float | None = None
  drop_connect_rate: float = 0.2
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    version, width, depth, _ = EFFICIENTNETS[self.variant]
    x = self._prepare(x, self.variant, 'imagenet')
    momentum = self.bn_momentum
    if momentum is None:
      momentum = 0.99 if version == 1 else 0.9
    blocks = EFFICIENTNET_V1_BLOCKS if version == 1 else \
        EFFICIENTNET_V2_B_BLOCKS
    rf = lambda n: round_filters(n, width, version)
    x = Conv(rf(blocks[0][2]), (3, 3), strides=(2, 2), padding='SAME',
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
    x = Conv(rf(1280), (1, 1), padding='SAME', use_bias=False)(x)
    x = nn.swish(_bn(train, momentum=momentum)(x))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


# -------------------------------------------------------------- registry --


def _keras_weights(value: Any) -> str | None:
  """None, or an existing `.h5`/`.hdf5`/`.keras` file (checked up front)."""
  if value is None:
    return None
  if not isinstance(value, (str, os.PathLike)):
    raise ValueError(f'keras_weights must be a file path (str) or None, got '
                     f'{value!r} ({type(value).__name__}).')
  path = os.fspath(value)
  if not path.endswith(('.h5', '.hdf5', '.keras')):
    raise ValueError(f'keras_weights must be a Keras .h5, .hdf5 or .keras '
                     f'file, got {path!r}.')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'keras_weights file {path!r} does not exist.')
  return path


def _momentum(value: Any) -> float | None:
  """None (Keras' momentum) or a BatchNorm momentum in [0, 1)."""
  return None if value is None else options.rate('bn_momentum', value)


def _common(image_size, input_shape, keras_weights) -> dict[str, Any]:
  return {'image_size': options.optional_integer('image_size', image_size,
                                                 minimum=32),
          'input_shape': options.shape('input_shape', input_shape, 3),
          'keras_weights': _keras_weights(keras_weights)}


def _efficientnet(variant: str):
  def build(num_classes: int, image_size: int | None = None,
            input_shape: Sequence[int] | None = None,
            drop_connect_rate: float = 0.2, dropout: float = 0.0,
            keras_weights: str | None = None,
            bn_momentum: float | None = None) -> nn.Module:
    return EfficientNet(num_classes=num_classes, variant=variant,
                        bn_momentum=_momentum(bn_momentum),
                        drop_connect_rate=options.rate('drop_connect_rate',
                                                       drop_connect_rate),
                        dropout=options.rate('dropout', dropout),
                        **_common(image_size, input_shape, keras_weights))
  build.__name__ = variant
  build.__doc__ = (f'keras.applications {variant} base + Dense head '
                   f'(ImageNet resolution {EFFICIENTNETS[variant][3]}).')
  return build


for _name in EFFICIENTNETS:
  register(_name)(_efficientnet(_name))


@register('resnet50')
def resnet50(num_classes: int, image_size: int | None = None,
             input_shape: Sequence[int] | None = None,
             keras_weights: str | None = None,
             bn_momentum: float | None = None) -> nn.Module:
  """keras.applications ResNet50 base + Dense head (`ResNet50` doc)."""
  return ResNet50(num_classes=num_classes, bn_momentum=_momentum(bn_momentum),
                  **_common(image_size, input_shape, keras_weights))


@register('vgg19')
def vgg19(num_classes: int, image_size: int | None = None,
          input_shape: Sequence[int] | None = None,
          keras_weights: str | None = None) -> nn.Module:
  """keras.applications VGG19 base + Dense head (`VGG19` doc)."""
  return VGG19(num_classes=num_classes,
               **_common(image_size, input_shape, keras_weights))


# Registers the Keras importers of these models (`keras_import.load`), and
# serves `data_init`; imported last since it builds on the classes above.
# pylint: disable-next=g-import-not-at-top,wrong-import-position
from tinyrobust.models import import_image
