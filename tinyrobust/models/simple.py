"""Small reference models: an MLP and a CNN, for end-to-end smoke runs.

Both accept any input rank: the MLP flattens everything after the batch axis;
the CNN treats `[B, H, W, C]` as 2-D and `[B, T, C]` as 1-D. The optional
`input_shape` option pins the per-example shape: the module then rejects
other inputs, and hardware profilers can tell a batch axis from a shape.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from tinyrobust.models import conventions
from tinyrobust.models import options
from tinyrobust.models.registry import register


def _check_built_width(module: nn.Module, layer: str, axis: int, got: int,
                       what: str) -> None:
  """Names the input width `layer`'s existing kernel was built for.

  Without it, variables built for one input shape and applied to another
  fail inside flax with a `ScopeParamShapeError` that names only a kernel.
  """
  if module.is_initializing() or not module.has_variable('params', layer):
    return
  kernel = module.get_variable('params', layer).get('kernel')
  if kernel is not None and kernel.shape[axis] != got:
    raise ValueError(f'{type(module).__name__.lower()} variables were built '
                     f'for inputs with {kernel.shape[axis]} '
                     f'{"features" if axis == 0 else "channels"}, got '
                     f'{what}; use variables initialised on this input '
                     'shape.')


class MLP(nn.Module):
  """Multi-layer perceptron on flattened inputs."""
  num_classes: int
  hidden: Sequence[int] = (128, 64)
  dropout: float = 0.0
  input_shape: tuple[int, ...] | None = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    conventions.check_built_shape('mlp', self.input_shape, x.shape[1:],
                                  x.shape)
    shape = x.shape
    x = x.reshape((x.shape[0], -1))
    _check_built_width(self, 'Dense_0', 0, x.shape[-1],
                       f'x of shape {shape} ({x.shape[-1]} features per '
                       'example)')
    for h in self.hidden:
      x = nn.relu(nn.Dense(h)(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


class CNN(nn.Module):
  """Conv-BN-ReLU stacks with stride-2 downsampling and global average pool."""
  num_classes: int
  features: Sequence[int] = (32, 64)
  kernel_size: int = 3
  dropout: float = 0.0
  input_shape: tuple[int, ...] | None = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    conventions.check_built_shape('cnn', self.input_shape, x.shape[1:],
                                  x.shape)
    _check_built_width(self, 'Conv_0', -2, x.shape[-1],
                       f'x of shape {x.shape} ({x.shape[-1]} channels)')
    spatial = x.ndim - 2
    k = (self.kernel_size,) * spatial
    for i, f in enumerate(self.features):
      x = nn.Conv(f, k, strides=(1 if i == 0 else 2,) * spatial,
                  padding='SAME', use_bias=False)(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
      x = nn.relu(x)
    x = jnp.mean(x, axis=tuple(range(1, 1 + spatial)))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


@register('mlp')
def mlp(num_classes: int, hidden: Sequence[int] = (128, 64),
        dropout: float = 0.0,
        input_shape: Sequence[int] | None = None) -> nn.Module:
  """MLP; `hidden` widths >= 1 (may be empty), `dropout` in [0, 1)."""
  return MLP(num_classes=num_classes,
             hidden=options.int_sequence('hidden', hidden, allow_empty=True),
             dropout=options.rate('dropout', dropout),
             input_shape=options.shape('input_shape', input_shape,
                                       range(1, 5)))


@register('cnn')
def cnn(num_classes: int, features: Sequence[int] = (32, 64),
        kernel_size: int = 3, dropout: float = 0.0,
        input_shape: Sequence[int] | None = None) -> nn.Module:
  """CNN; `features` widths >= 1, `kernel_size` >= 1, `dropout` in [0, 1)."""
  return CNN(num_classes=num_classes,
             features=options.int_sequence('features', features),
             kernel_size=options.integer('kernel_size', kernel_size),
             dropout=options.rate('dropout', dropout),
             input_shape=options.shape('input_shape', input_shape, (2, 3)))
