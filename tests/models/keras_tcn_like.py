"""keras-tcn's `TCN` layer structure, written out in Keras 3 for tests.

keras-tcn (philipperemy/keras-tcn) is not a dependency: its package pins
`tensorflow`, which would install beside our `tensorflow-cpu`. This is an
independent Keras 3 layer with the same nesting, sublayer names and
attribute layout, so its weights get keras-tcn's paths
(`tcn/residual_block_<b>/conv1D_<k>/kernel`,
`.../batch_normalization_<n>/gamma`, `.../matching_conv1D/bias`) in a
model, in a legacy `.h5` file and in a `.keras` archive
(`layers/tcn/residual_block_<b>/batch_norm_layers/<bn>/vars/<i>`), and the
same forward pass: per block two dilated Conv1D -> norm? -> ReLU, a 1x1
matching conv when the width changes, ReLU(x1 + x2); skips summed; the last
(causal) or middle ('same') time step.

`write_keras2_h5` writes a legacy HDF5 file with Keras-2 names
('tcn/residual_block_0/conv1D_0/kernel:0', 'norm_<k>' scopes), the layout
of checkpoints saved by TensorFlow 2.x Keras.
"""

from __future__ import annotations

import json

import numpy as np

from tests.models import keras_originals


def _classes():
  """The two Keras layer classes, defined once Keras is imported."""
  k = keras_originals.keras()
  L = k.layers

  class ResidualBlock(L.Layer):
    """One keras-tcn residual block; call returns `[out, skip]`."""

    def __init__(self, dilation_rate, nb_filters, kernel_size, padding,
                 use_batch_norm=False, use_layer_norm=False, **kwargs):
      super().__init__(**kwargs)
      self.dilation_rate, self.nb_filters = dilation_rate, nb_filters
      self.kernel_size, self.padding = kernel_size, padding
      self.use_batch_norm, self.use_layer_norm = use_batch_norm, use_layer_norm

    def build(self, input_shape):
      self.layers, self.batch_norm_layers, self.layer_norm_layers = [], [], []
      shape = tuple(input_shape)
      for k in range(2):
        conv = L.Conv1D(self.nb_filters, self.kernel_size,
                        dilation_rate=self.dilation_rate,
                        padding=self.padding, name=f'conv1D_{k}',
                        kernel_initializer='he_normal')
        conv.build(shape)
        shape = conv.compute_output_shape(shape)
        self.layers.append(conv)
        if self.use_batch_norm or self.use_layer_norm:
          norm = (L.BatchNormalization() if self.use_batch_norm
                  else L.LayerNormalization())
          norm.build(shape)
          self.layers.append(norm)
          (self.batch_norm_layers if self.use_batch_norm
           else self.layer_norm_layers).append(norm)
      self.shape_match_conv = None
      if self.nb_filters != input_shape[-1]:
        self.shape_match_conv = L.Conv1D(self.nb_filters, 1, padding='same',
                                         name='matching_conv1D')
        self.shape_match_conv.build(tuple(input_shape))
      for layer in self.layers + [self.shape_match_conv]:
        if layer is not None:
          setattr(self, layer.name, layer)

    def call(self, inputs, training=None):
      x1 = inputs
      normed = self.use_batch_norm or self.use_layer_norm
      for layer in self.layers:  # conv -> norm? -> ReLU, twice
        x1 = layer(x1, training=training)
        if not (normed and layer.name.startswith('conv1D')):
          x1 = k.ops.relu(x1)
      x2 = inputs if self.shape_match_conv is None else (
          self.shape_match_conv(inputs))
      return [k.ops.relu(x1 + x2), x1]

  class TCN(L.Layer):
    """keras-tcn `TCN(return_sequences=False)` with its config keys."""

    def __init__(self, nb_filters=64, kernel_size=3, nb_stacks=1,
                 dilations=(1, 2, 4, 8, 16, 32), padding='causal',
                 use_skip_connections=True, use_batch_norm=False,
                 use_layer_norm=False, **kwargs):
      super().__init__(**kwargs)
      self.nb_filters, self.kernel_size = nb_filters, kernel_size
      self.nb_stacks, self.dilations = nb_stacks, tuple(dilations)
      self.padding, self.use_skip_connections = padding, use_skip_connections
      self.use_batch_norm, self.use_layer_norm = use_batch_norm, use_layer_norm

    def build(self, input_shape):
      self.residual_blocks = []
      shape = tuple(input_shape)
      for _ in range(self.nb_stacks):
        for d in self.dilations:
          block = ResidualBlock(
              d, self.nb_filters, self.kernel_size, self.padding,
              self.use_batch_norm, self.use_layer_norm,
              name=f'residual_block_{len(self.residual_blocks)}')
          block.build(shape)
          shape = shape[:-1] + (self.nb_filters,)
          self.residual_blocks.append(block)
      for block in self.residual_blocks:
        setattr(self, block.name, block)

    def call(self, inputs, training=None):
      x, skips = inputs, []
      for block in self.residual_blocks:
        x, skip = block(x, training=training)
        skips.append(skip)
      if self.use_skip_connections:
        x = sum(skips[1:], skips[0])
      t = -1 if self.padding == 'causal' else x.shape[1] // 2
      return x[:, t, :]

    def get_config(self):
      return {**super().get_config(), 'nb_filters': self.nb_filters,
              'kernel_size': self.kernel_size, 'nb_stacks': self.nb_stacks,
              'dilations': list(self.dilations), 'padding': self.padding,
              'use_skip_connections': self.use_skip_connections,
              'dropout_rate': 0.0, 'return_sequences': False,
              'activation': 'relu', 'kernel_initializer': 'he_normal',
              'use_batch_norm': self.use_batch_norm,
              'use_layer_norm': self.use_layer_norm, 'go_backwards': False,
              'return_state': False}

  return TCN


_TCN = []


def tcn_class():
  """The Keras `TCN` layer class (built on first use)."""
  if not _TCN:
    _TCN.append(_classes())
  return _TCN[0]


def model(t=24, c=3, classes=4, softmax=True, seed=0, **tcn_kwargs):
  """`Input((t, c)) -> TCN(**tcn_kwargs) -> Dense(classes) [-> softmax]`,
  as keras-tcn's `compiled_tcn`, with random non-trivial norm statistics."""
  k = keras_originals.keras()
  k.utils.set_random_seed(seed)
  inp = k.layers.Input((t, c))
  x = tcn_class()(name='tcn', **tcn_kwargs)(inp)
  x = k.layers.Dense(classes)(x)
  if softmax:
    x = k.layers.Activation('softmax')(x)
  m = k.Model(inp, x)
  rng = np.random.default_rng(seed)
  for w in m.weights:  # BN/LN statistics and gains away from 0/1
    name = w.path.split('/')[-1]
    if name in ('gamma', 'moving_variance'):
      w.assign(rng.uniform(0.5, 1.5, w.shape).astype(np.float32))
    elif name in ('beta', 'moving_mean', 'bias'):
      w.assign(rng.normal(0, 0.2, w.shape).astype(np.float32))
  return m


def write_keras2_h5(path: str, m, tcn_config: dict | None = None,
                    weight_norm: bool = False) -> None:
  """`m`'s weights as a TF 2.x Keras full-model HDF5 file (h5py only).

  Norm sublayers are named 'norm_<k>' (keras-tcn's name scopes); with
  `weight_norm`, each conv kernel is stored as weight normalisation's
  direction `v` = kernel * 2 (any scale) with gain `g` = its norm / 2, so
  that `g v / ||v||` is the kernel (tensorflow-addons' layout).
  """
  import h5py  # pylint: disable=g-import-not-at-top
  layers, config_layers = [], []
  for layer in m.layers:
    names, arrays = [], []
    rank: dict[tuple[str, str], int] = {}
    for w in layer.weights:
      parts = w.path.split('/')
      for i, p in enumerate(parts):
        if 'normalization' in p:  # the block's n-th norm -> 'norm_<n>'
          seen = sum(1 for blk, _ in rank if blk == parts[i - 1])
          parts[i] = f'norm_{rank.setdefault((parts[i - 1], p), seen)}'
      arr = np.asarray(w.numpy())
      if weight_norm and parts[-1] == 'kernel' and 'conv1D' in parts[-2]:
        v = arr * 2.0
        g = np.sqrt(np.sum(np.square(v), axis=(0, 1))) / 2.0
        names += ['/'.join(parts[:-1] + ['g']) + ':0']
        arrays += [g.astype(np.float32)]
        arr = v
      names.append('/'.join(parts) + ':0')
      arrays.append(arr)
    layers.append((layer.name, names, arrays))
    cfg = tcn_config if layer.name == 'tcn' else {'name': layer.name}
    config_layers.append({'class_name': layer.__class__.__name__,
                          'config': {'name': layer.name, **(cfg or {})}})
  with h5py.File(path, 'w') as f:
    f.attrs['model_config'] = json.dumps(
        {'class_name': 'Functional', 'config': {'layers': config_layers}})
    g = f.create_group('model_weights')
    g.attrs['layer_names'] = [n.encode() for n, _, _ in layers]
    for name, wnames, arrays in layers:
      sub = g.create_group(name)
      sub.attrs['weight_names'] = [w.encode() for w in wnames]
      for w, a in zip(wnames, arrays):
        sub.create_dataset(w, data=a)
