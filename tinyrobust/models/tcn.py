"""Temporal convolutional network with keras-tcn semantics (Bai et al. 2018).

Follows `philipperemy/keras-tcn` `TCN` with `return_sequences=False`:
residual blocks, one per (stack, dilation), each
  x1 = [Conv1D(nb_filters, kernel_size, dilation) -> norm? -> ReLU ->
        SpatialDropout1D] x 2
  x2 = 1x1 Conv1D of the block input when its channels != nb_filters, else
       the input itself
  out = ReLU(x1 + x2);  skip = x1.
With `use_skip_connections` the block skips are summed; the output is the
last time step for causal padding (the middle one for 'same'), followed by a
dense classifier. Kernels use He-normal init like keras-tcn.
Receptive field: 1 + 2 (kernel_size - 1) nb_stacks sum(dilations).
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import flax.linen as nn
import jax

from tinyrobust.models import conventions
from tinyrobust.models import options
from tinyrobust.models.registry import register

_PADDINGS = ('causal', 'same')


def receptive_field(kernel_size: int, nb_stacks: int,
                    dilations: Sequence[int]) -> int:
  """keras-tcn's receptive field in time steps."""
  return 1 + 2 * (kernel_size - 1) * nb_stacks * sum(dilations)


class ResidualBlock(nn.Module):
  """One keras-tcn residual block; returns `(out, skip)`, both `[B, T, F]`."""
  nb_filters: int
  kernel_size: int
  dilation: int
  padding: str = 'causal'
  dropout_rate: float = 0.0
  use_batch_norm: bool = False
  use_layer_norm: bool = False
  norm_epsilon: float | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False):
    inputs = x
    he = nn.initializers.he_normal()
    if self.padding == 'causal':
      pad = [((self.kernel_size - 1) * self.dilation, 0)]
    else:
      pad = 'SAME'
    for k in range(2):
      x = nn.Conv(self.nb_filters, (self.kernel_size,),
                  kernel_dilation=(self.dilation,), padding=pad,
                  kernel_init=he, name=f'conv1D_{k}')(x)
      eps = {} if self.norm_epsilon is None else {'epsilon': self.norm_epsilon}
      if self.use_batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                         name=f'norm_{k}', **eps)(x)
      elif self.use_layer_norm:
        x = nn.LayerNorm(name=f'norm_{k}', **eps)(x)
      x = nn.relu(x)
      # SpatialDropout1D drops whole channels: share the mask over time.
      x = nn.Dropout(self.dropout_rate, broadcast_dims=(1,),
                     deterministic=not train)(x)
    if inputs.shape[-1] != self.nb_filters:
      inputs = nn.Conv(self.nb_filters, (1,), kernel_init=he,
                       name='matching_conv1D')(inputs)
    return nn.relu(inputs + x), x


class TCN(conventions.InputSpec, nn.Module):
  """keras-tcn TCN + dense classifier: `[B, T, C]` -> logits `[B, L]`.

  Attributes:
    num_classes: number of logits.
    nb_filters: filters of every convolution.
    kernel_size: temporal kernel size.
    dilations: dilation of each block in a stack.
    nb_stacks: how many times the dilation list is repeated.
    padding: 'causal' (output = last step) or 'same' (output = middle step).
    use_skip_connections: sum the blocks' conv outputs instead of using the
      last block's residual output.
    dropout_rate: SpatialDropout1D rate (training only).
    use_batch_norm, use_layer_norm: normalisation after each convolution.
    norm_epsilon: that normalisation's epsilon; None keeps Flax's defaults
      (BatchNorm 1e-5, LayerNorm 1e-6); keras-tcn checkpoints use Keras'
      1e-3 (`keras_tcn` sets it on import).
    input_shape: `(T, C)`, optional; checked against the input when set.
  """
  num_classes: int
  nb_filters: int = 64
  kernel_size: int = 3
  dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
  nb_stacks: int = 1
  padding: str = 'causal'
  use_skip_connections: bool = True
  dropout_rate: float = 0.0
  use_batch_norm: bool = False
  use_layer_norm: bool = False
  norm_epsilon: float | None = None
  input_shape: tuple[int, ...] | None = None

  input_kind: ClassVar[str] = 'sequence'
  default_input_shape: ClassVar[tuple[int, ...]] = (550, 6)

  @property
  def receptive_field(self) -> int:
    return receptive_field(self.kernel_size, self.nb_stacks, self.dilations)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Logits of `x`: `[B, T, C]` (or `[B, T, F, 1]` spectrograms)."""
    if x.ndim == 4 and x.shape[-1] == 1:
      x = x[..., 0]
    if x.ndim != 3:
      raise ValueError(f'TCN expects sequences [B, T, C], got {x.shape}.')
    if self.input_shape is not None and x.shape[1:] != self.input_shape[:2]:
      raise ValueError(f'TCN built for input_shape={self.input_shape}, got x '
                       f'of shape {x.shape}.')
    skips = []
    i = 0
    for _ in range(self.nb_stacks):
      for d in self.dilations:
        x, skip = ResidualBlock(
            self.nb_filters, self.kernel_size, d, self.padding,
            self.dropout_rate, self.use_batch_norm, self.use_layer_norm,
            self.norm_epsilon, name=f'residual_block_{i}')(x, train)
        skips.append(skip)
        i += 1
    if self.use_skip_connections:
      x = sum(skips[1:], skips[0])
    x = x[:, -1, :] if self.padding == 'causal' else x[:, x.shape[1] // 2, :]
    return nn.Dense(self.num_classes, name='classifier')(x)


@register('tcn')
def tcn(num_classes: int, nb_filters: int = 64, kernel_size: int = 3,
        dilations: Sequence[int] = (1, 2, 4, 8, 16, 32), nb_stacks: int = 1,
        padding: str = 'causal', use_skip_connections: bool = True,
        dropout_rate: float = 0.0, use_batch_norm: bool = False,
        use_layer_norm: bool = False,
        input_shape: Sequence[int] | None = None,
        norm_epsilon: float | None = None) -> nn.Module:
  """keras-tcn TCN (its defaults) with a dense classifier."""
  use_batch_norm = options.boolean('use_batch_norm', use_batch_norm)
  use_layer_norm = options.boolean('use_layer_norm', use_layer_norm)
  if use_batch_norm and use_layer_norm:
    raise ValueError('Only one of use_batch_norm and use_layer_norm may be '
                     'set.')
  return TCN(num_classes=num_classes,
             nb_filters=options.integer('nb_filters', nb_filters),
             kernel_size=options.integer('kernel_size', kernel_size),
             dilations=options.int_sequence('dilations', dilations),
             nb_stacks=options.integer('nb_stacks', nb_stacks),
             padding=options.choice('padding', padding, _PADDINGS),
             use_skip_connections=options.boolean('use_skip_connections',
                                                  use_skip_connections),
             dropout_rate=options.rate('dropout_rate', dropout_rate),
             use_batch_norm=use_batch_norm, use_layer_norm=use_layer_norm,
             norm_epsilon=None if norm_epsilon is None else options.positive(
                 'norm_epsilon', norm_epsilon),
             input_shape=options.shape('input_shape', input_shape, (2, 3)))


# Registers the keras-tcn importer (`keras_import.load('tcn', ...)`);
# imported last since it builds on the registration above.
# pylint: disable-next=g-import-not-at-top,wrong-import-position
from tinyrobust.models import keras_tcn
