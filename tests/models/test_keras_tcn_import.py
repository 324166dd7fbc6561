"""keras-tcn checkpoints (legacy .h5, .keras, Keras-2 names) import into the
zoo tcn with Keras' outputs; their options are read from the checkpoint."""

import h5py
import jax
import numpy as np
import pytest

from tests.models import keras_tcn_like as ktl
from tinyrobust.models import keras_import
from tinyrobust.models import keras_tcn

pytest.importorskip('keras')

# Several keras-tcn settings; the zoo options are NOT passed: they come
# from the weights (filters, kernel, blocks, norm) and the TCN's config.
SETTINGS = {
    'skip_causal': dict(nb_filters=8, dilations=(1, 2)),
    'bn_stacks_noskip': dict(nb_filters=6, dilations=(1, 2), nb_stacks=2,
                             use_batch_norm=True, use_skip_connections=False),
    'ln_same_nomatch': dict(nb_filters=3, kernel_size=2, dilations=(1, 2, 4),
                            use_layer_norm=True, padding='same'),
}


def _x(c=3, t=24, b=3, seed=5):
  return np.random.default_rng(seed).normal(0, 1, (b, t, c)).astype(
      np.float32)


def _check(model, source, x, **kwargs):
  module, variables = keras_import.load('tcn', source, **kwargs)
  ref = np.asarray(model(x, training=False))
  out = np.asarray(module.apply(variables, x))
  if np.allclose(ref.sum(-1), 1.0, atol=1e-5):  # softmax head
    out = np.asarray(jax.nn.softmax(out))
  np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)
  return module


@pytest.mark.parametrize('fmt', ['h5', 'keras'])
@pytest.mark.parametrize('setting', sorted(SETTINGS))
def test_keras_tcn_file_imports_with_keras_outputs(setting, fmt, tmp_path):
  kw = SETTINGS[setting]
  model = ktl.model(softmax=setting == 'skip_causal', **kw)
  path = str(tmp_path / f'm.{fmt}')
  model.save(path)  # .keras: TCN class unknown to Keras -> h5py reader
  module = _check(model, path, _x())
  assert module.nb_filters == kw['nb_filters']
  assert module.dilations == kw['dilations']
  assert module.nb_stacks == kw.get('nb_stacks', 1)
  assert module.use_batch_norm == kw.get('use_batch_norm', False)
  assert module.padding == kw.get('padding', 'causal')


def test_keras_model_and_registered_class_keras_file(tmp_path):
  """A live keras.Model, and a .keras file that Keras itself loads (the
  TCN class registered, as when keras-tcn is installed)."""
  import keras  # pylint: disable=g-import-not-at-top
  model = ktl.model(nb_filters=4, kernel_size=3, dilations=(1, 4),
                    use_batch_norm=True, softmax=False)
  _check(model, model, _x())
  path = str(tmp_path / 'm.keras')
  model.save(path)
  with keras.saving.custom_object_scope({'TCN': ktl.tcn_class()}):
    layers = keras_import.read_layers(path)
    assert [layer.class_name for layer in layers] == ['TCN', 'Dense']
    _check(model, path, _x())


def test_keras2_names_with_weight_norm_fold(tmp_path):
  """TF 2.x Keras names ('.../norm_0/gamma:0') and tensorflow-addons'
  weight normalisation (direction v, gain g) fold into the kernel."""
  kw = dict(nb_filters=5, dilations=(1, 2), use_batch_norm=True)
  model = ktl.model(softmax=False, **kw)
  path = str(tmp_path / 'k2.h5')
  ktl.write_keras2_h5(path, model, {**kw, 'nb_stacks': 1}, weight_norm=True)
  names = keras_import.read_layers(path)[0].weight_paths
  assert 'tcn/residual_block_1/norm_1/moving_variance:0' in names
  assert 'tcn/residual_block_0/conv1D_0/g:0' in names
  _check(model, path, _x())


def test_weights_only_needs_what_the_weights_do_not_record(tmp_path):
  model = ktl.model(nb_filters=4, dilations=(1, 2, 4), softmax=False,
                    use_skip_connections=False)
  path = str(tmp_path / 'w.h5')
  ktl.write_keras2_h5(path, model, tcn_config=None)
  with pytest.raises(ValueError, match=r"3 residual blocks, nb_filters=4, "
                     r"kernel_size=3, but not \['dilations', 'padding', "
                     r"'use_skip_connections'\].*dilations=\(1, 2, 4, 8"):
    keras_import.load('tcn', path)
  given = dict(dilations=(1, 2, 4), padding='causal',
               use_skip_connections=False)
  _check(model, path, _x(), **given)
  # The same arrays with skip connections are another model, not an error:
  # why the option cannot be defaulted.
  module, v = keras_import.load('tcn', path, **{
      **given, 'use_skip_connections': True})
  assert np.abs(np.asarray(module.apply(v, _x())) -
                np.asarray(model(_x(), training=False))).max() > 1e-2
  # 3 blocks: no stack of these dilations makes them.
  with pytest.raises(ValueError, match=r'3 residual blocks.*dilations='):
    keras_import.load('tcn', path, **{**given, 'dilations': (1, 2)})
  with pytest.raises(ValueError, match=r'nb_filters=8 contradicts.*=4'):
    keras_import.load('tcn', path, nb_filters=8, **given)


def test_missing_and_unknown_weight_paths_are_named(tmp_path):
  model = ktl.model(nb_filters=4, dilations=(1, 2), softmax=False)
  path = str(tmp_path / 'm.h5')
  ktl.write_keras2_h5(path, model, {'dilations': [1, 2]})
  with h5py.File(path, 'r+') as f:
    g = f['model_weights/tcn']
    names = [n.decode() if isinstance(n, bytes) else n
             for n in g.attrs['weight_names']]
    keep = [n for n in names if 'residual_block_1/conv1D_1' not in n]
    g.attrs['weight_names'] = [n.encode() for n in keep + [
        'tcn/residual_block_0/mystery/kernel:0']]
    g.create_dataset('tcn/residual_block_0/mystery/kernel:0',
                     data=np.zeros(3))
  with pytest.raises(ValueError, match=r"mystery/kernel:0"):
    keras_import.load('tcn', path)
  with h5py.File(path, 'r+') as f:
    g = f['model_weights/tcn']
    g.attrs['weight_names'] = [n.encode() for n in keep]
  with pytest.raises(ValueError,
                     match=r"without Keras weights: \['residual_block_1/"
                           r"conv1D_1'\]"):
    keras_import.load('tcn', path)


def test_unsupported_keras_tcn_settings_are_errors():
  layer = keras_import.KerasLayer(
      'tcn', 'TCN', [np.zeros((2, 3, 4), np.float32)], ['kernel'],
      ('tcn/residual_block_0/conv1D_0/kernel',),
      {'return_sequences': True, 'dilations': [1]})
  with pytest.raises(ValueError, match='return_sequences'):
    keras_tcn.infer_options([layer], {})
