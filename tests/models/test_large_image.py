"""keras.applications image models: Flax == Keras, ImageNet files, resize.

The Keras originals are keras.applications bases (`weights=None`, small
inputs, batch 2) + `Dense(10)`. EfficientNet V1 is built through Keras'
own `weights='imagenet'` branch (its extra `Rescaling(1/sqrt(std))`) from
a local `*_notop.h5` file that stores the Normalization statistics as
Keras' ImageNet files do (variance = std), so the test covers the graph
ImageNet transfer learning actually runs (B4, for time, is the
`weights=None` graph with the equivalent statistics set by hand).

Random weights alone make these deep nets input-blind (the logits of two
images agree to 1e-5), which would let a wrong preprocessing pass. So
BatchNorm is calibrated: random gamma/beta, one training-mode pass with
momentum 0 sets the moving statistics to the batch statistics, then they
are perturbed (mean x U(0.8, 1.2), variance + 10% of its layer mean, x
U(0.8, 1.25)). Every test checks that the logits of two images differ by
more than 1% of their scale (100x the tolerance) before comparing.

Tolerance: |Flax - Keras| <= 1e-4 x max |Keras logit| (relative to the
logit scale, float32 through up to 40 blocks; measured: <= 1e-5 of the
scale, <= 3.4e-5 absolute).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust import attacks
from tinyrobust import tf_setup
from tinyrobust.models import conventions
from tinyrobust.models import get_model
from tinyrobust.models import imagenet
from tinyrobust.models import import_image
from tinyrobust.models import keras_import

os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
pytest.importorskip('keras')

CLASSES = {'efficientnet_b0': 'EfficientNetB0',
           'efficientnet_b4': 'EfficientNetB4',
           'efficientnetv2_b0': 'EfficientNetV2B0',
           'efficientnetv2_b3': 'EfficientNetV2B3',
           'resnet50': 'ResNet50', 'vgg19': 'VGG19'}
# Keras input size per model: 48 (odd feature maps, 3x3 -> 2x2, and the
# in-model resize from 32) for two of them, the CIFAR-10 32 elsewhere.
SIZES = {'efficientnet_b0': 48, 'resnet50': 48}
_TMP = tempfile.mkdtemp(prefix='tinyrobust_large_image_')
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)


def _keras():
  tf_setup.import_tf()
  import keras  # pylint: disable=g-import-not-at-top
  return keras


def _bn_layers(model):
  for layer in model.layers:
    if hasattr(layer, 'layers'):
      yield from _bn_layers(layer)
    elif layer.__class__.__name__ == 'BatchNormalization':
      yield layer


def calibrate_bn(model, x: np.ndarray, seed: int = 0) -> None:
  """Non-trivial BN parameters and statistics that keep the signal alive
  (module doc)."""
  rng = np.random.default_rng(seed)
  layers = list(_bn_layers(model))
  momenta = [layer.momentum for layer in layers]
  for layer in layers:
    g, b, m, v = layer.get_weights()
    layer.set_weights([rng.uniform(0.5, 1.5, g.shape),
                       rng.normal(0, .2, b.shape), m, v])
    layer.momentum = 0.0
  model(x, training=True)
  for layer, momentum in zip(layers, momenta):
    layer.momentum = momentum
    g, b, m, v = layer.get_weights()
    layer.set_weights([g, b, m * rng.uniform(0.8, 1.2, m.shape),
                       (v + 0.1 * v.mean()) * rng.uniform(0.8, 1.25, v.shape)])


def save_notop_h5(base, path: str) -> str:
  """A weights-only legacy HDF5 file, the format of Keras' ImageNet files."""
  from keras.src.legacy.saving import legacy_h5_format  # pylint: disable=g-import-not-at-top
  with h5py.File(path, 'w') as f:
    legacy_h5_format.save_weights_to_hdf5_group(f, base)
  return path


def _v1_imagenet_graph(cls: str, size: int):
  """EfficientNetB*(weights='imagenet') loading a local random file."""
  keras = _keras()
  from keras.src.applications import efficientnet  # pylint: disable=g-import-not-at-top
  plain = getattr(keras.applications, cls)(
      weights=None, include_top=False, input_shape=(size, size, 3))
  norm = next(l for l in plain.layers
              if l.__class__.__name__ == 'Normalization')
  norm.set_weights([np.float32([.485, .456, .406]),  # as Keras' files:
                    np.float32([.229, .224, .225]),  # variance = std
                    norm.get_weights()[2]])
  path = save_notop_h5(plain, os.path.join(_TMP, f'{cls}_random.h5'))
  get_file = efficientnet.file_utils.get_file
  efficientnet.file_utils.get_file = lambda *a, **k: path
  try:
    return getattr(keras.applications, cls)(
        weights='imagenet', include_top=False, input_shape=(size, size, 3),
        pooling='avg')
  finally:
    efficientnet.file_utils.get_file = get_file


def keras_input(name: str, x: np.ndarray) -> np.ndarray:
  """[0, 1] images -> what the Keras model takes (0-255; caffe by Keras'
  own `preprocess_input` for ResNet50/VGG19)."""
  x = np.asarray(x, np.float32) * 255.0
  if name in ('resnet50', 'vgg19'):
    keras = _keras()
    return keras.applications.imagenet_utils.preprocess_input(x, mode='caffe')
  return x


def _set_imagenet_normalization(base) -> None:
  """weights=None EfficientNet V1: the unadapted Normalization layer ->
  ImageNet mean and variance std**2 (Keras computes (x - mean) / std)."""
  norm = next(l for l in base.layers if l.__class__.__name__ == 'Normalization')
  norm.set_weights([np.float32([.485, .456, .406]),
                    np.float32([.229, .224, .225]) ** 2,
                    norm.get_weights()[2]])
  norm.finalize_state()  # set_weights alone leaves the layer's constants


@functools.lru_cache(maxsize=None)
def keras_original(name: str):
  """(Keras model = base + Dense(10), its base, Keras input size).

  EfficientNetB0 runs Keras' `weights='imagenet'` graph; B4 (time) the
  `weights=None` one with the same normalisation set by hand.
  """
  keras = _keras()
  size = SIZES.get(name, 32)
  if name == 'efficientnet_b0':
    base = _v1_imagenet_graph(CLASSES[name], size)
  else:
    base = getattr(keras.applications, CLASSES[name])(
        weights=None, include_top=False, input_shape=(size, size, 3),
        pooling='avg')
    if name == 'efficientnet_b4':
      _set_imagenet_normalization(base)
  inp = keras.Input((size, size, 3))
  model = keras.Model(inp, keras.layers.Dense(10)(base(inp)))
  calib = np.random.default_rng(1).uniform(0, 1, (8, size, size, 3))
  calibrate_bn(model, keras_input(name, calib))
  return model, base, size


def _images(size_in: int = 32, b: int = 2) -> np.ndarray:
  return np.random.default_rng(3).uniform(
      0, 1, (b, size_in, size_in, 3)).astype(np.float32)


def _resized(x: np.ndarray, size: int) -> np.ndarray:
  if x.shape[1] == size:
    return x
  return np.asarray(jax.image.resize(x, (x.shape[0], size, size, 3),
                                     'bilinear'))


def _assert_equal_logits(out, ref):
  ref, out = np.asarray(ref), np.asarray(out)
  scale = np.abs(ref).max()
  spread = np.abs(ref[0] - ref[1]).max() / scale
  assert spread > 0.01, f'input-blind reference (spread {spread:.1e})'
  err = np.abs(out - ref).max()
  assert err <= 1e-4 * scale, (err, scale)


@pytest.mark.parametrize('name', sorted(CLASSES))
def test_flax_equals_keras_applications(name):
  """Import from the keras.Model; CIFAR-10-shaped [0, 1] input; the zoo
  model resizes 32 -> 48 itself where the Keras original is 48x48."""
  model, _, size = keras_original(name)
  kwargs = {'image_size': size} if size != 32 else {}
  module, variables = keras_import.load(name, model, **kwargs)
  x = _images()
  ref = model(keras_input(name, _resized(x, size)), training=False)
  _assert_equal_logits(jax.jit(module.apply)(variables, x), ref)


def test_notop_imagenet_file_and_keras_weights_hook():
  """A `*_notop.h5` file (no head) imports through `keras_import.load` and
  through the `keras_weights` option the trainer's `data_init` reads."""
  name = 'efficientnet_b0'
  model, base, size = keras_original(name)
  path = save_notop_h5(base, os.path.join(_TMP, 'efficientnetb0_notop.h5'))
  assert not import_image.has_head(keras_import.read_layers(path))
  head = dict(zip(('kernel', 'bias'), model.layers[-1].get_weights()))
  x = _images()
  ref = model(keras_input(name, _resized(x, size)), training=False)

  module, loaded = keras_import.load(name, path, num_classes=10,
                                     image_size=size)
  assert float(jnp.abs(loaded['params']['Dense_0']['kernel']).max()) > 0
  loaded['params']['Dense_0'] = jax.tree.map(jnp.asarray, head)
  _assert_equal_logits(jax.jit(module.apply)(loaded, x), ref)

  # The trainer's hook on other variables (here: the import, all arrays
  # scaled by 3, standing in for a fresh init) loads the same backbone
  # and keeps their head.
  hooked = get_model(name, 10, image_size=size, keras_weights=path)
  fresh = jax.tree.map(lambda a: 3.0 * a, loaded)
  got = conventions.hook(hooked, 'data_init')(fresh, x, jax.random.key(0))
  np.testing.assert_array_equal(got['params']['Dense_0']['kernel'],
                                fresh['params']['Dense_0']['kernel'])
  del got['params']['Dense_0'], loaded['params']['Dense_0']
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(loaded)):
    np.testing.assert_array_equal(a, b)


def test_v1_from_scratch_normalization_is_refused(tmp_path):
  """A V1 file whose Normalization is the unadapted identity (weights=None
  trained from scratch) is an error, not a silently different model."""
  _, base, _ = keras_original('efficientnet_b0')
  good = save_notop_h5(base, str(tmp_path / 'b0.h5'))
  bad = str(tmp_path / 'b0_identity.h5')
  shutil.copy(good, bad)
  with h5py.File(bad, 'r+') as f:
    for name in f.attrs['layer_names']:
      name = name.decode() if isinstance(name, bytes) else name
      for w in f[name].attrs.get('weight_names', []):
        w = w.decode() if isinstance(w, bytes) else w
        if w.split('/')[-1].split(':')[0] in ('mean', 'variance'):
          f[name][w][...] = 0.0 if 'mean' in w else 1.0
  import_image.check_normalization('efficientnet_b0', good)
  model = get_model('efficientnet_b0', 10, keras_weights=bad)
  init = jax.eval_shape(lambda: model.init(jax.random.key(0), _images()))
  with pytest.raises(ValueError, match=r'variance \[1.0, 1.0, 1.0\]'):
    model.data_init(init, None, None)
  with pytest.raises(ValueError, match='weights=None'):
    import_image.load('efficientnet_b0', bad)


def test_options_are_checked_up_front(tmp_path):
  with pytest.raises(FileNotFoundError, match='nope.h5'):
    get_model('resnet50', 10, keras_weights=str(tmp_path / 'nope.h5'))
  with pytest.raises(ValueError, match=r'\.h5, \.hdf5 or \.keras'):
    get_model('vgg19', 10, keras_weights='weights.npz')
  with pytest.raises(ValueError, match='file path'):
    get_model('efficientnet_b0', 10, keras_weights=3)
  with pytest.raises(ValueError, match='bn_momentum'):
    get_model('resnet50', 10, bn_momentum=1.5)
  with pytest.raises(ValueError, match='image_size'):
    get_model('efficientnetv2_b3', 10, image_size=16)


def test_resize_matches_tf_and_attack_perturbs_the_32x32_image():
  """The in-model resize is TF's bilinear resize (upsampling) and is
  differentiable: FGSM under jit moves every pixel of the 32x32 input.
  (efficientnet_b0 trains and meets FGSM/PGD under jit in
  test_large_models.py.)"""
  tf = tf_setup.import_tf()
  x = _images()
  np.testing.assert_allclose(
      _resized(x, 48), tf.image.resize(x, (48, 48), 'bilinear').numpy(),
      atol=1e-6)
  model = get_model('vgg19', 10, image_size=48)
  variables = model.init(jax.random.key(0), x[:1])
  apply = lambda v, z: model.apply(v, z, train=False)
  y = jnp.asarray([0, 1])
  x_adv = np.asarray(jax.jit(attacks.make_fgsm(apply))(
      variables, jnp.asarray(x), y, jax.random.key(1), 0.03))
  delta = np.abs(x_adv - x)
  assert x_adv.shape == x.shape and np.isfinite(x_adv).all()
  assert delta.max() <= 0.03 + 1e-6
  assert (np.abs(delta - 0.03) < 1e-5).mean() > 0.9  # sign(grad) != 0


def test_stochastic_depth_acts_in_training_only():
  """Keras' per-example residual drop: in training each example's residual
  branch is dropped or scaled by 1 / (1 - rate), per key; eval never drops
  (the equivalence tests run eval with the default drop_connect_rate)."""
  mbconv = lambda drop: imagenet._MBConv(  # pylint: disable=protected-access
      3, 8, 8, 4, 1, 0.25, False, drop, 0.99)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(16, 4, 4, 8)),
                  jnp.float32)
  variables = mbconv(0.5).init(jax.random.key(0), x, False)
  train = lambda drop, key: mbconv(drop).apply(
      variables, x, True, rngs={'dropout': key}, mutable=['batch_stats'])[0]
  branch = train(0.0, jax.random.key(0)) - x
  a, b = train(0.5, jax.random.key(1)), train(0.5, jax.random.key(2))
  dropped = np.asarray(jnp.all(a == x, axis=(1, 2, 3)))
  assert 0 < dropped.sum() < 16 and bool(jnp.any(a != b))
  np.testing.assert_allclose(a[~dropped] - x[~dropped],
                             2.0 * branch[~dropped], rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(mbconv(0.5).apply(variables, x, False),
                                mbconv(0.0).apply(variables, x, False))
