"""Keras importers of the keras.applications image models (`imagenet.py`).

    # a keras.applications ImageNet file, or any Keras model of the same
    # architecture (with or without its head); `keras_import.load` works
    # too, minus the V1 normalisation check below:
    module, variables = import_image.load(
        'resnet50', 'resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5',
        num_classes=10, image_size=224)
    # or let the trainer load it right after `init` (`data_init` hook):
    model = get_model('efficientnet_b0', 10, image_size=224,
                      keras_weights='efficientnetb0_notop.h5')

The backbone maps by `keras_import`'s generic creation-order mapping
(Conv2D, DepthwiseConv2D, BatchNormalization, Dense; shape mismatches name
the Keras layer, the Flax module and both shapes). The head is handled here:

* a Keras model whose last weight layer is a Dense with a 2-D kernel has a
  head: it maps to the zoo's `Dense(num_classes)` and must have its shape;
* a base without head (`include_top=False`, the `*_notop.h5` ImageNet
  files): the backbone is imported and the zoo head keeps the values in
  `variables` (`load_into`, the trainer's hook: the random init), or gets
  Flax's default init with key 0 (`keras_import.load`, whose template is
  zeros).

Keras' preprocessing layers carry no importable weights: the zoo models
apply the documented preprocessing (`imagenet` module doc). EfficientNet
V1 keeps its ImageNet statistics in a `Normalization` layer; where the
source shows that layer (`load`, `load_into`, `check_normalization`; not
`keras_import.load`, whose importers see weight layers only), statistics
other than ImageNet's (e.g. the identity of a `weights=None` model trained
from scratch) are an error instead of a silently different model.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tinyrobust.models import keras_import
from tinyrobust.models import registry as model_registry

IMAGE_MODELS = ('efficientnet_b0', 'efficientnet_b4', 'efficientnetv2_b0',
                'efficientnetv2_b3', 'resnet50', 'vgg19')
_V1 = ('efficientnet_b0', 'efficientnet_b4')
_IMAGENET_MEAN = np.asarray((0.485, 0.456, 0.406))
_IMAGENET_STD = np.asarray((0.229, 0.224, 0.225))


def has_head(layers: Sequence[keras_import.KerasLayer]) -> bool:
  """Whether the Keras model ends in a Dense layer (a classifier head)."""
  last = layers[-1] if layers else None
  return (last is not None and keras_import.keras_kind(last) == 'dense' and
          last.weights[0].ndim == 2)


def head_name(params: dict) -> str:
  """The zoo model's head: its only top-level module with a 2-D kernel."""
  heads = [k for k, v in params.items()
           if isinstance(v, dict) and np.ndim(v.get('kernel')) == 2]
  if len(heads) != 1:
    raise ValueError(f'Expected one top-level Dense head, found {heads}.')
  return heads[0]


def _label_depthwise(layer: keras_import.KerasLayer
                     ) -> keras_import.KerasLayer:
  """Keras 3 names a DepthwiseConv2D's weight 'kernel', so in a weights-only
  HDF5 file (no class names) it looks like a Conv2D. In these models a
  layer named '*dwconv*' with a 4-D one-output-channel kernel is depthwise
  (Keras' names: 'block1a_dwconv', V2 'block4a_dwconv2')."""
  w = layer.weights
  if (not layer.class_name and 'dwconv' in layer.name and
      layer.weight_names == ['kernel'] and w[0].ndim == 4 and
      w[0].shape[-1] == 1):
    return layer._replace(class_name='DepthwiseConv2D')
  return layer


def import_layers(module: nn.Module, layers: Sequence[keras_import.KerasLayer],
                  variables: Any, *, init_head: bool = False) -> dict:
  """Keras `layers` into a copy of `module`'s `variables` (module doc).

  Args:
    module: a zoo image model (`imagenet.py`).
    layers: `keras_import.read_layers(source)`.
    variables: the module's variables (template or `init` output).
    init_head: when the Keras model has no head, give the zoo head Flax's
      default init (lecun normal kernel, zero bias; key 0) instead of
      keeping its values.

  Returns:
    `{'params', 'batch_stats'}` as jnp arrays.
  """
  layers = [_label_depthwise(layer) for layer in layers]
  shape = (1,) + tuple(module.example_input_shape())
  order = keras_import.creation_order(module, shape)
  if has_head(layers):
    return keras_import.import_by_order(layers, variables, order)
  variables = jax.tree.map(np.asarray, flax.core.unfreeze(variables))
  head = head_name(variables['params'])
  kept = variables['params'].pop(head)
  if init_head:
    kernel = nn.initializers.lecun_normal()(jax.random.key(0),
                                            kept['kernel'].shape)
    kept = {'kernel': np.asarray(kernel), 'bias': np.zeros_like(kept['bias'])}
  out = jax.tree.map(np.asarray, flax.core.unfreeze(
      keras_import.import_by_order(layers, variables, order)))
  out['params'][head] = kept
  return jax.tree.map(jnp.asarray, out)


# ------------------------------------------------ V1 input normalisation --


def _normalization_from_model(model) -> tuple[Any, bool]:
  """(mean, variance) of a keras.Model's Normalization layer (or None),
  and whether a per-channel Rescaling (Keras' ImageNet fix) is present."""
  stats, rescale = None, False
  for layer in model.layers:
    if hasattr(layer, 'layers'):
      sub, sub_rescale = _normalization_from_model(layer)
      stats, rescale = stats or sub, rescale or sub_rescale
    elif layer.__class__.__name__ == 'Normalization':
      stats = (np.ravel(layer.mean), np.ravel(layer.variance))
    elif layer.__class__.__name__ == 'Rescaling':
      rescale |= np.size(layer.scale) > 1
  return stats, rescale


def _decode(names) -> list[str]:
  return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _normalization_from_h5(path: str) -> tuple[Any, None]:
  """(mean, variance) of a legacy HDF5 file's Normalization layer (or
  None); whether a Rescaling follows is unknown from the weights."""
  import h5py  # pylint: disable=g-import-not-at-top
  with h5py.File(path, 'r') as f:
    g = f['model_weights'] if 'model_weights' in f else f
    for name in _decode(g.attrs.get('layer_names', [])):
      wnames = _decode(g[name].attrs.get('weight_names', []))
      short = {w.split('/')[-1].split(':')[0]: w for w in wnames}
      if {'mean', 'variance'} <= set(short):
        return (np.ravel(g[name][short['mean']]),
                np.ravel(g[name][short['variance']])), None
  return None, None


def check_normalization(name: str, source: Any) -> None:
  """Raises if an EfficientNet V1 source normalises its input otherwise
  than the zoo model, `(x - ImageNet mean) / ImageNet std` (module doc).

  Accepted: variance = std with Keras' `Rescaling(1/sqrt(std))` (a model
  built with `weights='imagenet'`, and the ImageNet files, which store
  variance = std), or variance = std**2 without it. Other models and
  sources without a Normalization layer pass.
  """
  if name not in _V1:
    return
  if isinstance(source, (str, os.PathLike)):
    path = os.fspath(source)
    if path.endswith('.keras'):
      import keras  # pylint: disable=g-import-not-at-top
      stats, rescale = _normalization_from_model(
          keras.saving.load_model(path, compile=False))
    else:
      stats, rescale = _normalization_from_h5(path)
  else:
    stats, rescale = _normalization_from_model(source)
  if stats is None:
    return
  mean, var = stats
  close = lambda a, b: a.shape == b.shape and np.allclose(a, b, rtol=1e-3)
  ok_var = {True: (_IMAGENET_STD,), False: (_IMAGENET_STD ** 2,),
            None: (_IMAGENET_STD, _IMAGENET_STD ** 2)}[rescale]
  if not close(mean, _IMAGENET_MEAN) or not any(close(var, v)
                                                for v in ok_var):
    raise ValueError(
        f'{name}: the Keras model normalises its input with mean '
        f'{np.round(mean, 4).tolist()} and variance '
        f'{np.round(var, 4).tolist()}, the zoo model with ImageNet mean '
        f'{_IMAGENET_MEAN.tolist()} and std {_IMAGENET_STD.tolist()} (a '
        "Keras model built with weights='imagenet', or its ImageNet file). "
        'A weights=None model trained from scratch sees other inputs and '
        'does not import faithfully.')


# ------------------------------------------------------------- entries ----


def load_into(module: nn.Module, source: Any, variables: Any) -> dict:
  """`source`'s weights into `variables` of `module` (the trainer's
  `keras_weights` hook); a headless source keeps `variables`' head."""
  name = getattr(module, 'variant', None) or type(module).__name__.lower()
  check_normalization(name, source)
  return import_layers(module, keras_import.read_layers(source), variables)


def load(name: str, source: Any, **kwargs) -> tuple[nn.Module, dict]:
  """`keras_import.load` after `check_normalization` (which the generic
  importer API, seeing only weight layers, cannot run)."""
  check_normalization(name, source)
  return keras_import.load(name, source, **kwargs)


def _importer(name: str):
  def fn(layers, variables, **model_kwargs):
    params = variables['params']
    k = int(params[head_name(params)]['kernel'].shape[-1])
    module = model_registry.get_model(name, k, **model_kwargs)
    return import_layers(module, layers, variables, init_head=True)
  fn.__name__ = f'import_{name}'
  fn.__doc__ = f'keras.applications {name}, with or without its head.'
  return fn


for _name in IMAGE_MODELS:
  keras_import.register_importer(_name)(_importer(_name))
