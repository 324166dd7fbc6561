"""Small reference models: an MLP and a CNN, for end-to-end smoke runs.

Both accept any input rank: the MLP flattens everything after the batch axis;
the CNN treats `[B, H, W, C]` as 2-D and `[B, T, C]` as 1-D.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from tinyrobust.models.registry import register


class MLP(nn.Module):
  """Multi-layer perceptron on flattened inputs."""
  num_classes: int
  hidden: Sequence[int] = (128, 64)
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.reshape((x.shape[0], -1))
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

  @nn.compact
  def __call__(self, x, train: bool = False):
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
        dropout: float = 0.0) -> nn.Module:
  return MLP(num_classes=num_classes, hidden=tuple(hidden), dropout=dropout)


@register('cnn')
def cnn(num_classes: int, features: Sequence[int] = (32, 64),
        kernel_size: int = 3, dropout: float = 0.0) -> nn.Module:
  return CNN(num_classes=num_classes, features=tuple(features),
             kernel_size=kernel_size, dropout=dropout)
