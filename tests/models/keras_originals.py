"""Keras originals of the zoo models (random weights) for import tests.

Each builder returns `(keras_model, zoo_name, zoo_kwargs, x)`: the Keras
architecture as its source writes it, the zoo model and options that must
reproduce it, and an input batch in the zoo's convention. The Keras models
take Keras' own layout (e.g. `[B, 6, 550, 1]` for the HAR CNNs) through a
leading Permute/Reshape where the zoo's differs, so the comparison covers
the layout change too.
"""

from __future__ import annotations

import numpy as np

from tinyrobust import tf_setup


def keras():
  tf_setup.import_tf()
  import keras as k  # pylint: disable=g-import-not-at-top
  return k


def randomize_bn(model, seed: int = 0) -> None:
  """Non-trivial BatchNorm statistics and affine parameters."""
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if hasattr(layer, 'layers'):
      randomize_bn(layer, seed + 1)
    if layer.__class__.__name__ == 'BatchNormalization':
      g, b, m, v = layer.get_weights()
      layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, .2,
                                                                    b.shape),
                         rng.normal(0, .2, m.shape),
                         rng.uniform(0.5, 2.0, v.shape)])


def _har_convs(L, x, filters):
  for i, (bn, pool) in enumerate(((False, 1), (True, 1), (True, 3),
                                  (False, 1), (True, 2), (True, 2))):
    x = L.Conv2D(filters, (1, 10), activation='relu', padding='same')(x)
    if bn:
      x = L.BatchNormalization()(x)
    if pool > 1:
      x = L.MaxPooling2D((1, pool))(x)
  return x


def har_cnn(t=550, c=6, filters=128, classes=9, b=2):
  k = keras()
  L = k.layers
  inp = L.Input((c, t, 1))
  x = _har_convs(L, inp, filters)
  x = L.Dropout(0.5)(x)
  x = L.Flatten()(x)
  x = L.Dense(64, activation='relu')(x)
  x = L.BatchNormalization()(x)
  x = L.Dropout(0.5)(x)
  x = L.Dense(classes, activation='softmax')(x)
  return k.Model(inp, x), 'har_cnn', {'filters': filters}, _seq(b, t, c)


def har_cnn_lstm(t=550, c=6, filters=128, classes=9, b=2):
  k = keras()
  L = k.layers
  inp = L.Input((c, t, 1))
  x = _har_convs(L, inp, filters)
  x = L.Permute((2, 1, 3))(x)
  x = L.Reshape((x.shape[1], c * filters))(x)
  x = L.Bidirectional(L.LSTM(128))(x)
  x = L.Dense(classes, activation='softmax')(x)
  return k.Model(inp, x), 'har_cnn_lstm', {'filters': filters}, _seq(b, t, c)


def har_lstm(t=550, c=6, classes=9, b=2):
  k = keras()
  L = k.layers
  m = k.Sequential([L.Input((t, c)), L.LSTM(128, return_sequences=True),
                    L.Dropout(0.5), L.LSTM(128), L.Dropout(0.5),
                    L.Dense(classes, activation='softmax')])
  return m, 'har_lstm', {}, _seq(b, t, c)


def kws_cnn(classes=12, b=2):
  k = keras()
  L = k.layers
  m = k.Sequential([
      L.Input((49, 10, 1)),
      L.Conv2D(64, (20, 8), activation='relu', padding='valid'),
      L.Dropout(0.2), L.MaxPooling2D((2, 2), padding='same'),
      L.Conv2D(64, (10, 2), activation='relu', padding='valid'),
      L.Dropout(0.2), L.MaxPooling2D((2, 2), padding='same'),
      L.Flatten(), L.Dense(classes)])
  return m, 'kws_cnn', {}, _mfcc(b)


def kws_rnn(cell='gru', units=400, classes=12, b=2):
  k = keras()
  L = k.layers
  rnn = L.GRU(units) if cell == 'gru' else L.LSTM(units)
  m = k.Sequential([L.Input((49, 10)), rnn, L.Dense(classes)])
  return m, f'kws_{cell}', {}, _mfcc(b)


def attention_rnn(t=49, mels=40, classes=12, b=2):
  """de Andrade et al.'s `AttRNNSpeechModel` after its kapre front-end
  (the log-mel frames `[B, T, M]` are the input; softmax head)."""
  k = keras()
  L = k.layers
  inp = L.Input((t, mels))
  x = L.Reshape((t, mels, 1))(inp)
  x = L.Conv2D(10, (5, 1), activation='relu', padding='same')(x)
  x = L.BatchNormalization()(x)
  x = L.Conv2D(1, (5, 1), activation='relu', padding='same')(x)
  x = L.BatchNormalization()(x)
  x = L.Reshape((t, mels))(x)
  x = L.Bidirectional(L.LSTM(64, return_sequences=True))(x)
  x = L.Bidirectional(L.LSTM(64, return_sequences=True))(x)
  x_last = L.Lambda(lambda q: q[:, -1])(x)
  query = L.Dense(128)(x_last)
  scores = L.Softmax()(L.Dot(axes=[1, 2])([query, x]))
  att = L.Dot(axes=[1, 1])([scores, x])
  x = L.Dense(64, activation='relu')(att)
  x = L.Dense(32)(x)
  x = L.Dense(classes, activation='softmax')(x)
  logmel = np.random.default_rng(3).normal(0, 2, (b, t, mels))
  return k.Model(inp, x), 'attention_rnn', {}, logmel.astype(np.float32)


def resnet8(classes=10, b=2):
  """MLPerf Tiny `resnet_v1_eembc` (softmax head)."""
  k = keras()
  L = k.layers
  inp = L.Input((32, 32, 3))
  x = L.Conv2D(16, 3, padding='same')(inp)
  x = L.Activation('relu')(L.BatchNormalization()(x))
  for i, f in enumerate((16, 32, 64)):
    s = 1 if i == 0 else 2
    y = L.Conv2D(f, 3, strides=s, padding='same')(x)
    y = L.Activation('relu')(L.BatchNormalization()(y))
    y = L.BatchNormalization()(L.Conv2D(f, 3, padding='same')(y))
    if s != 1:
      x = L.Conv2D(f, 1, strides=s, padding='same')(x)
    x = L.Activation('relu')(L.Add()([x, y]))
  x = L.Flatten()(L.AveragePooling2D(8)(x))
  x = L.Dense(classes, activation='softmax')(x)
  rng = np.random.default_rng(0)
  return k.Model(inp, x), 'resnet8', {}, rng.uniform(
      0, 1, (b, 32, 32, 3)).astype(np.float32)


def dscnn(classes=12, b=2):
  """MLPerf Tiny `ds_cnn` (model_size_info of the reference)."""
  k = keras()
  L = k.layers
  inp = L.Input((49, 10, 1))
  x = L.Conv2D(64, (10, 4), strides=(2, 2), padding='same')(inp)
  x = L.Dropout(0.2)(L.Activation('relu')(L.BatchNormalization()(x)))
  for _ in range(4):
    x = L.DepthwiseConv2D((3, 3), padding='same')(x)
    x = L.Activation('relu')(L.BatchNormalization()(x))
    x = L.Conv2D(64, (1, 1), padding='same')(x)
    x = L.Activation('relu')(L.BatchNormalization()(x))
  x = L.Dropout(0.4)(x)
  x = L.Flatten()(L.AveragePooling2D(pool_size=(25, 5))(x))
  x = L.Dense(classes, activation='softmax')(x)
  return k.Model(inp, x), 'dscnn', {}, _mfcc(b)


def tcn(t=64, c=6, filters=8, kernel=3, dilations=(1, 2, 4), classes=9,
        b=2):
  """keras-tcn `TCN(return_sequences=False, use_skip_connections=True)` +
  Dense, written out with Keras layers (keras-tcn is not a dependency):
  per block two causal dilated Conv1D + ReLU, a 1x1 matching conv when the
  width changes, residual ReLU; skips summed; last time step."""
  k = keras()
  L = k.layers
  inp = L.Input((t, c))
  x, skips = inp, []
  for d in dilations:
    y = x
    for _ in range(2):
      y = L.Conv1D(filters, kernel, dilation_rate=d, padding='causal',
                   activation='relu')(y)
    res = x if x.shape[-1] == filters else L.Conv1D(filters, 1)(x)
    x = L.Activation('relu')(L.Add()([res, y]))
    skips.append(y)
  x = L.Add()(skips)
  x = L.Lambda(lambda z: z[:, -1, :])(x)
  x = L.Dense(classes)(x)
  return k.Model(inp, x), 'tcn', {
      'nb_filters': filters, 'kernel_size': kernel,
      'dilations': tuple(dilations), 'input_shape': (t, c)}, _seq(b, t, c)


def _seq(b, t, c):
  return np.random.default_rng(1).normal(0, 1, (b, t, c)).astype(np.float32)


def _mfcc(b):
  return np.random.default_rng(2).normal(0, 5, (b, 49, 10)).astype(np.float32)


def keras_input(name: str, x: np.ndarray) -> np.ndarray:
  """The zoo input `x` in the Keras original's layout."""
  if name in ('har_cnn', 'har_cnn_lstm'):
    return np.swapaxes(x, 1, 2)[..., None]
  if name in ('kws_cnn', 'dscnn'):
    return x[..., None]
  return x


BUILDERS = {
    'har_cnn': har_cnn, 'har_cnn_lstm': har_cnn_lstm, 'har_lstm': har_lstm,
    'kws_cnn': kws_cnn, 'kws_gru': lambda: kws_rnn('gru', 400),
    'kws_lstm': lambda: kws_rnn('lstm', 500), 'resnet8': resnet8,
    'dscnn': dscnn, 'tcn': tcn, 'attention_rnn': attention_rnn,
}

# The keras.applications image models are compared in test_large_image.py
# (BatchNorm calibrated so that the logits depend on the input).
