"""SavedModel directories import by variable name with Keras' outputs:
Keras 3 `model.export` / `tf.saved_model.save`, the Keras-2 checkpoint
layout (`layer_with_weights-<i>`, optimizer variables), and keras-tcn (its
options from a Keras-2 `keras_metadata.pb`, else given)."""

import json
import os

import jax
import numpy as np
import pytest

from tests.models import keras_originals as ko
from tests.models import keras_tcn_like as ktl
from tinyrobust import tf_setup
from tinyrobust.models import keras_import
from tinyrobust.models import savedmodel

pytest.importorskip('keras')


def _compare(name, model, x, module, variables, atol=1e-5):
  """Probabilities where the Keras head ends in softmax, else logits."""
  ref = np.asarray(model(ko.keras_input(name, x), training=False))
  out = np.asarray(module.apply(variables, x))
  if np.allclose(ref.sum(-1), 1.0, atol=1e-5):
    out = np.asarray(jax.nn.softmax(out))
  np.testing.assert_allclose(out, ref, atol=atol)


# kws_lstm: a large recurrent model ('lstm/lstm_cell/recurrent_kernel').
@pytest.mark.parametrize('name,how', [('dscnn', 'export'),
                                      ('resnet8', 'saved_model.save'),
                                      ('kws_lstm', 'export')])
def test_keras3_savedmodel_round_trip(name, how, tmp_path):
  tf = tf_setup.import_tf()
  model, zoo, kwargs, x = ko.BUILDERS[name]()
  ko.randomize_bn(model)
  path = str(tmp_path / name)
  if how == 'export':
    model.export(path, verbose=False)
  else:
    tf.saved_model.save(model, path)
  module, variables = keras_import.load(zoo, path, **kwargs)
  _compare(name, model, x, module, variables)


def _save_keras2_layout(model, path):
  """`model`'s weights as a TF 2.x Keras SavedModel checkpoint: objects
  `layer_with_weights-<i>`, variables named '<layer>/<weight>:0'
  (DepthwiseConv2D's 'depthwise_kernel'), and an optimizer whose step
  counter and same-shaped moment slots must be left out."""
  tf = tf_setup.import_tf()
  root, opt = tf.Module(), tf.Module()
  opt.iter = tf.Variable(np.int64(100), name='Adam/iter')
  slots = []
  weighted = [layer for layer in model.layers if layer.weights]
  for i, layer in enumerate(weighted):
    obj = tf.Module()
    for w in layer.weights:
      short = w.path.split('/')[-1]
      if layer.__class__.__name__ == 'DepthwiseConv2D' and short == 'kernel':
        short = 'depthwise_kernel'
      setattr(obj, short, tf.Variable(w.numpy(), name=f'{layer.name}/{short}'))
      slots.append(tf.Variable(np.full(w.shape, 7.0, np.float32),
                               name=f'Adam/{layer.name}/{short}/m'))
    setattr(root, f'layer_with_weights-{i}', obj)
  opt.slots = slots
  root.optimizer = opt
  tf.saved_model.save(root, path)


def test_keras2_layout_with_optimizer_slots(tmp_path):
  model, zoo, kwargs, x = ko.dscnn()
  ko.randomize_bn(model)
  path = str(tmp_path / 'kws_ref_model')
  _save_keras2_layout(model, path)
  layers = savedmodel.read_savedmodel(path)
  # 19 weight layers in model order ('layer_with_weights-10' after -9),
  # none of the optimizer's.
  assert len(layers) == 19
  assert layers[2].weight_names == ['depthwise_kernel', 'bias']
  assert not any(p.startswith('Adam') for layer in layers
                 for p in layer.weight_paths)
  module, variables = keras_import.load(zoo, path, **kwargs)
  _compare('dscnn', model, x, module, variables)


def test_keras_tcn_savedmodel_needs_only_what_weights_cannot_say(tmp_path):
  """A Keras 3 SavedModel has no config: filters, kernel and norm come
  from the weights; dilations, padding and skip connections must be given
  (a TCN without skips has the same arrays and other outputs)."""
  tf = tf_setup.import_tf()
  model = ktl.model(nb_filters=4, dilations=(1, 2, 4), use_batch_norm=True,
                    use_skip_connections=False)
  path = str(tmp_path / 'tcn')
  tf.saved_model.save(model, path)
  with pytest.raises(ValueError, match=r"without its TCN config.*3 residual "
                     r"blocks.*\['padding', 'use_skip_connections'\]"):
    keras_import.load('tcn', path, dilations=(1, 2, 4))
  module, variables = keras_import.load(
      'tcn', path, dilations=(1, 2, 4), padding='causal',
      use_skip_connections=False)
  assert module.nb_filters == 4 and module.use_batch_norm
  x = np.random.default_rng(0).normal(0, 1, (2, 24, 3)).astype(np.float32)
  ref = np.asarray(model(x, training=False))
  out = np.asarray(jax.nn.softmax(module.apply(variables, x)))
  np.testing.assert_allclose(out, ref, atol=1e-5)


def _write_keras_metadata(model, path: str) -> None:
  """`keras_metadata.pb` as TF 2.x Keras writes it beside a SavedModel:
  one node per layer whose metadata JSON holds name, class and config."""
  from tensorflow.python.keras.protobuf import saved_metadata_pb2 as pb  # pylint: disable=g-import-not-at-top
  meta = pb.SavedMetadata()
  for i, layer in enumerate(model.layers):
    node = meta.nodes.add()
    node.node_id, node.node_path = i + 1, f'root.layer-{i}'
    node.identifier = '_tf_keras_layer'
    node.metadata = json.dumps({'name': layer.name, 'trainable': True,
                                'class_name': layer.__class__.__name__,
                                'config': layer.get_config()})
  with open(os.path.join(path, 'keras_metadata.pb'), 'wb') as f:
    f.write(meta.SerializeToString())


def test_keras2_tcn_savedmodel_options_from_keras_metadata(tmp_path):
  """A Keras-2 SavedModel's keras_metadata.pb gives the TCN's config: no
  option to pass, even stacks, 'same' padding and no skips."""
  tf = tf_setup.import_tf()
  model = ktl.model(nb_filters=5, dilations=(1, 2), nb_stacks=2,
                    use_layer_norm=True, use_skip_connections=False,
                    padding='same')
  path = str(tmp_path / 'har_tcn')
  tf.saved_model.save(model, path)
  _write_keras_metadata(model, path)
  layers = savedmodel.read_savedmodel(path)
  assert [layer.class_name for layer in layers] == ['TCN', '']
  assert layers[0].config['nb_stacks'] == 2
  module, variables = keras_import.load('tcn', path)
  assert (module.nb_stacks, module.dilations, module.padding,
          module.use_skip_connections) == (2, (1, 2), 'same', False)
  x = np.random.default_rng(0).normal(0, 1, (2, 24, 3)).astype(np.float32)
  np.testing.assert_allclose(
      np.asarray(jax.nn.softmax(module.apply(variables, x))),
      np.asarray(model(x, training=False)), atol=1e-5)
  with pytest.raises(ValueError, match=r'padding=.causal. contradicts.*'
                     r"config has padding='same'"):
    keras_import.load('tcn', path, padding='causal')


def test_bad_directories_are_errors(tmp_path):
  with pytest.raises(ValueError, match='not a SavedModel'):
    keras_import.read_layers(str(tmp_path))
  (tmp_path / 'saved_model.pb').write_bytes(b'')
  with pytest.raises(ValueError, match='variables.index'):
    keras_import.read_layers(str(tmp_path))
