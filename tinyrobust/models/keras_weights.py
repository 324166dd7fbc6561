"""The record every Keras reader produces, and the helpers they share.

A reader (`keras_import.read_h5`, `keras_archive.read_archive`,
`savedmodel.read_savedmodel`, or a live `keras.Model`) turns a checkpoint
into a list of `KerasLayer`s in model order: one per weight-carrying Keras
layer, with each array's short name ('kernel', 'moving_mean', ...) and its
full path in the checkpoint ('tcn/residual_block_0/conv1D_0/kernel:0'),
so a layer that nests others (keras-tcn's `TCN`) can be mapped by path.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple, Sequence

import numpy as np


class KerasLayer(NamedTuple):
  """One Keras layer's weights, in the layer's own order.

  Attributes:
    name: the Keras layer name ('dense_1', 'tcn').
    class_name: its Keras class ('Dense', 'TCN'), '' when the source does
      not say (weights-only files, SavedModels).
    weights: the arrays.
    weight_names: each array's short name ('kernel', 'gamma').
    weight_paths: each array's full path in the source (empty when the
      reader has none); nested layers are mapped by these.
    config: the layer's Keras config (`get_config()`), when the source
      carries one (full-model HDF5, `.keras`).
  """
  name: str
  class_name: str
  weights: list[np.ndarray]
  weight_names: list[str]
  weight_paths: tuple[str, ...] = ()
  config: dict[str, Any] | None = None


def short(name: str) -> str:
  """'dense_1/kernel:0' or 'lstm/lstm_cell/recurrent_kernel' -> last part."""
  return name.split('/')[-1].split(':')[0]


def natural_key(text: str) -> tuple:
  """Sort key that orders 'block_2' before 'block_10'."""
  return tuple(int(t) if t.isdigit() else t
               for t in re.split(r'(\d+)', text))


def owner(name: str) -> str:
  """The Keras layer a weight belongs to, from its full name: the name
  minus the weight's own, a recurrent cell ('lstm/lstm_cell'), a
  Bidirectional half ('bidirectional/forward_lstm') or keras-tcn blocks
  ('tcn/residual_block_0/conv1D_0'); container prefixes stay
  ('sequential/dense/kernel' -> 'sequential/dense')."""
  parts = name.split(':')[0].split('/')[:-1]
  for i, part in enumerate(parts):
    if re.match(r'residual_block_\d+$', part) or part.startswith(
        ('forward_', 'backward_')):
      return '/'.join(parts[:i])
  if parts and (parts[-1] == 'cell' or parts[-1].endswith('_cell')):
    parts = parts[:-1]
  return '/'.join(parts)


def is_preprocessing(weight_names: Sequence[str]) -> bool:
  """Normalization layers (mean, variance, count): the zoo models hold
  their input preprocessing as constants, documented per model."""
  return set(weight_names) <= {'mean', 'variance', 'count'}


def _direction(path: str) -> str | None:
  for part in path.split('/'):
    if part.startswith('forward') or part.startswith('backward'):
      return 'forward' if part.startswith('forward') else 'backward'
  return None


def is_bidirectional(layer: KerasLayer) -> bool:
  """A Keras `Bidirectional` wrapper (by class, or by its weight paths)."""
  if layer.class_name == 'Bidirectional':
    return True
  paths = layer.weight_paths or layer.weight_names
  return bool(paths) and all(_direction(p) for p in paths)


def split_bidirectional(layer: KerasLayer) -> list[KerasLayer]:
  """A `Bidirectional` layer -> its forward and backward recurrent layers
  (by the 'forward_*'/'backward_*' parts of the weight paths; by halves,
  forward first, when the paths do not say)."""
  n = len(layer.weights)
  paths = layer.weight_paths or layer.weight_names
  dirs = [_direction(p) for p in paths]
  if not all(dirs) or dirs.count('forward') * 2 != n:
    dirs = ['forward'] * (n // 2) + ['backward'] * (n - n // 2)
  out = []
  for d in ('forward', 'backward'):
    idx = [i for i in range(n) if dirs[i] == d]
    sub = 'GRU' if layer.weights[idx[-1]].ndim == 2 else 'LSTM'
    out.append(KerasLayer(
        f'{layer.name}/{d}', sub, [layer.weights[i] for i in idx],
        [layer.weight_names[i] for i in idx],
        tuple(layer.weight_paths[i] for i in idx) if layer.weight_paths
        else ()))
  return out


def label_depthwise(layer: KerasLayer) -> KerasLayer:
  """Keras 3 names a DepthwiseConv2D's weight 'kernel'; in a source without
  class names a layer called '*depthwise*' or '*dwconv*' with a 4-D kernel
  of one output channel per input channel is one."""
  name = layer.name.lower()
  w = dict(zip(layer.weight_names, layer.weights))
  k = w.get('kernel')
  if (not layer.class_name and ('depthwise' in name or 'dwconv' in name) and
      k is not None and k.ndim == 4 and k.shape[-1] == 1):
    return layer._replace(class_name='DepthwiseConv2D')
  return layer


def finish(layers: Sequence[KerasLayer]) -> list[KerasLayer]:
  """Drops preprocessing layers, splits Bidirectional wrappers and labels
  depthwise convolutions: the last step of every reader."""
  out = []
  for layer in layers:
    if not layer.weights or is_preprocessing(layer.weight_names):
      continue
    if is_bidirectional(layer):
      out.extend(split_bidirectional(layer))
    else:
      out.append(label_depthwise(layer))
  return out
