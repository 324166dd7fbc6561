"""Keras originals (random weights) import into the zoo with equal outputs."""

import jax
import numpy as np
import pytest

from tests.models import keras_originals as ko
from tinyrobust.models import keras_import

pytest.importorskip('keras')

NAMES = sorted(ko.BUILDERS)


def _outputs(name, model, x, module, variables):
  ref = np.asarray(model(ko.keras_input(name, x), training=False))
  out = np.asarray(module.apply(variables, x, train=False))
  softmax_head = np.allclose(ref.sum(-1), 1.0, atol=1e-5) and ref.min() >= 0
  return ref, np.asarray(jax.nn.softmax(out)) if softmax_head else out


@pytest.mark.parametrize('name', NAMES)
def test_import_reproduces_keras_outputs(name):
  model, zoo, kwargs, x = ko.BUILDERS[name]()
  ko.randomize_bn(model)
  module, variables = keras_import.load(zoo, model, **kwargs)
  ref, out = _outputs(name, model, x, module, variables)
  assert out.shape == ref.shape
  np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_legacy_h5_round_trip_of_a_recurrent_model(tmp_path):
  """A Keras-2 style HDF5 file is read with h5py alone (no Keras config)."""
  model, zoo, kwargs, x = ko.kws_rnn('gru', 16)
  path = str(tmp_path / 'kws_gru.h5')
  model.save(path)
  layers = keras_import.read_h5(path)
  assert [l.class_name for l in layers] == ['GRU', 'Dense']
  assert layers[0].weights[2].shape == (2, 48)  # reset_after biases
  module, variables = keras_import.load(zoo, path, units=16)
  ref, out = _outputs('kws_gru', model, x, module, variables)
  np.testing.assert_allclose(out, ref, atol=1e-5)


def test_shape_mismatch_names_layer_and_both_shapes():
  model, _, _, _ = ko.kws_rnn('lstm', 8)
  with pytest.raises(ValueError) as e:
    keras_import.load('kws_lstm', model, units=16)
  msg = str(e.value)
  assert 'lstm' in msg.lower() and '(10, 32)' in msg and '(10, 64)' in msg, msg


def test_leftover_keras_layers_and_bad_sources_are_errors(tmp_path):
  model, _, _, _ = ko.kws_rnn('gru', 8)
  with pytest.raises(ValueError, match='kws_lstm|LSTM|recurrent|fit'):
    keras_import.load('kws_lstm', model, units=8)
  with pytest.raises(FileNotFoundError, match='nope.h5'):
    keras_import.read_layers(str(tmp_path / 'nope.h5'))
  with pytest.raises(ValueError, match='Unknown model'):
    keras_import.load('kws_lstmm', model)
  with pytest.raises(ValueError, match='keras.Model or a path'):
    keras_import.read_layers(3)


def _small_sequential():
  """Lambda (which Keras' safe mode will not load back), Conv1D, BN,
  Bidirectional LSTM and Dense, with non-trivial BN statistics."""
  k = ko.keras()
  L = k.layers
  model = k.Sequential([L.Input((8, 3)), L.Lambda(lambda t: t * 2.0),
                        L.Conv1D(4, 3), L.BatchNormalization(),
                        L.Bidirectional(L.LSTM(5)), L.Dense(2)])
  ko.randomize_bn(model)
  return model


def _same_layers(got, want):
  assert [(l.class_name, l.weight_names) for l in got] == [
      (l.class_name, l.weight_names) for l in want]
  for a, b in zip(got, want):
    for x, y in zip(a.weights, b.weights):
      np.testing.assert_array_equal(x, y)


def test_keras_file_keras_cannot_load_is_read_with_h5py(tmp_path):
  """Keras refuses the Lambda layer; the archive's arrays are read by the
  layers' classes and positions, the same as from the live model."""
  model = _small_sequential()
  path = str(tmp_path / 'lambda.keras')
  model.save(path)
  want = keras_import.read_layers(model)
  assert [l.class_name for l in want] == ['Conv1D', 'BatchNormalization',
                                          'LSTM', 'LSTM', 'Dense']
  _same_layers(keras_import.read_layers(path), want)


def test_savedmodel_of_a_sequential_model_reads_like_the_model(tmp_path):
  """Keras 3 prefixes a Sequential model's variables with its name
  ('sequential/conv1d/kernel'); the layers, the Bidirectional halves and
  Keras' array order come out as from the model itself."""
  from tinyrobust import tf_setup  # pylint: disable=g-import-not-at-top
  tf = tf_setup.import_tf()
  model = _small_sequential()
  path = str(tmp_path / 'sm')
  tf.saved_model.save(model, path)
  want = [l._replace(class_name='') for l in keras_import.read_layers(model)]
  got = keras_import.read_layers(path)
  assert got[0].weight_paths[0].startswith(model.name + '/')
  _same_layers([l._replace(class_name='') for l in got], want)
