"""Import trained Keras models into the zoo's Flax modules.

    module, variables = keras_import.load('kws_lstm', 'kws_lstm.h5')
    logits = module.apply(variables, x)
    module, variables = keras_import.load('tcn', 'har_tcn.h5')  # keras-tcn
    module, variables = keras_import.load('dscnn', 'kws_ref_model/')

`source` is a `keras.Model`, a `.keras` file, a legacy Keras-2 HDF5 file
(`model.save('m.h5')` or `model.save_weights('w.h5')`) or a SavedModel
directory. HDF5 files are read with h5py only, weight arrays by layer in the
file's `layer_names` order, so checkpoints whose config Keras 3 can no longer
deserialise (old LSTM arguments, custom layers such as keras-tcn's `TCN`)
still import; a `.keras` file Keras cannot load (a custom class whose
package is missing) is read with h5py too (`keras_archive`); a SavedModel's
variables are read by name from its checkpoint (`savedmodel`).

The mapping is explicit:

* Keras layers with weights become `KerasLayer(name, class_name, weights,
  weight_names, weight_paths, config)` (`keras_weights`), in model order; a
  `Bidirectional` layer becomes its forward and backward halves; nested
  models are flattened. A layer that nests others keeps one record with
  every array's full path, for its model's importer (keras-tcn's `TCN`:
  `keras_tcn`, which also reads the TCN's options from the checkpoint).
* Each zoo module's weight-carrying Flax modules (Dense, Conv, depthwise
  conv, BatchNorm, the Keras-layout LSTM/GRU of `models.recurrent`) are
  listed in creation order, and each takes the first unused Keras layer of
  the same kind whose weight shapes fit (so a functional Keras graph that
  lists a residual shortcut convolution before the main path still maps;
  same-shaped layers keep their relative order).
* Conversions: Dense, Conv1D/2D, LSTM and GRU (`reset_after=True`, Keras
  gate order i, f, c, o and z, r, h) copy unchanged (the Flax modules keep
  Keras' layouts); DepthwiseConv2D `[kh, kw, C, 1]` -> `[kh, kw, 1, C]`;
  BatchNormalization gamma, beta, moving mean and variance -> params
  `scale`, `bias` and batch_stats `mean`, `var` (the modules use Keras'
  epsilon 1e-3).
* Any mismatch is a ValueError naming the Keras layer, the Flax module path
  and both shapes; leftover Keras or Flax layers are an error too.

A model family with another layout registers its own importer with
`register_importer(name)`: `fn(layers, variables, **model_kwargs) ->
variables`, and may register `register_inference(name)` to derive zoo
options from the checkpoint. Every zoo model is importable by the generic
order mapping (`importable()` lists them).
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tinyrobust import registry
from tinyrobust.models import registry as model_registry
from tinyrobust.models import keras_archive
from tinyrobust.models import keras_weights
from tinyrobust.models import savedmodel
from tinyrobust.models.keras_weights import KerasLayer

IMPORTERS = registry.Registry('keras importer')
INFERENCE = registry.Registry('keras option inference')
_CONTAINERS = ('Functional', 'Sequential', 'Model')


def register_importer(*model_names: str):
  """Decorator: `fn(layers, variables, **model_kwargs) -> variables`."""
  return IMPORTERS.register(*model_names)


def register_inference(*model_names: str):
  """Decorator: `fn(layers, model_kwargs) -> (model_kwargs, init_shape)`
  fills in the zoo options a checkpoint implies (e.g. a keras-tcn TCN's
  filters and kernel size) before `load` builds the module; `init_shape`
  (one example's shape to build the template with) may be None."""
  return INFERENCE.register(*model_names)


# ------------------------------------------------------------- reading ----


def _from_keras_model(model) -> list[KerasLayer]:
  out = []
  for layer in model.layers:
    if hasattr(layer, 'layers') and layer.__class__.__name__ in _CONTAINERS:
      out.extend(_from_keras_model(layer))
      continue
    ws = layer.weights
    if not ws:
      continue
    paths = tuple(getattr(w, 'path', w.name) for w in ws)
    try:
      config = layer.get_config()
    except (NotImplementedError, TypeError):
      config = None
    out.append(KerasLayer(layer.name, layer.__class__.__name__,
                          [np.asarray(w.numpy()) for w in ws],
                          [keras_weights.short(p) for p in paths], paths,
                          config))
  return keras_weights.finish(out)


def _h5_configs(f) -> dict[str, tuple[str, dict]]:
  """Layer name -> (class name, config) from a full-model file's
  `model_config`."""
  raw = f.attrs.get('model_config')
  if raw is None:
    return {}
  cfg = json.loads(raw if isinstance(raw, str) else raw.decode())
  found = {}

  def walk(c):
    for lyr in c.get('config', {}).get('layers', []):
      found[lyr.get('config', {}).get('name', lyr.get('name'))] = (
          lyr['class_name'], lyr.get('config', {}))
      if lyr['class_name'] in _CONTAINERS:
        walk(lyr)

  walk(cfg)
  return found


def _decode(names) -> list[str]:
  return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def read_h5(path: str) -> list[KerasLayer]:
  """Layers of a legacy Keras HDF5 file (full model or weights only)."""
  import h5py  # pylint: disable=g-import-not-at-top
  try:
    f = h5py.File(path, 'r')
  except OSError as err:
    raise ValueError(f'{path!r} is not a readable HDF5 file ({err}).') from err
  with f:
    configs = _h5_configs(f)
    g = f['model_weights'] if 'model_weights' in f else f
    if 'layer_names' not in g.attrs:
      raise ValueError(f'{path!r} has no `layer_names` attribute: not a '
                       'legacy Keras HDF5 file (Keras 3 `.weights.h5` files '
                       'load through keras: pass the keras.Model).')
    out = []
    for name in _decode(g.attrs['layer_names']):
      wnames = _decode(g[name].attrs.get('weight_names', []))
      cls, config = configs.get(name, ('', None))
      layer = KerasLayer(name, cls, [np.asarray(g[name][w]) for w in wnames],
                         [keras_weights.short(w) for w in wnames],
                         tuple(wnames), config)
      out.extend(_split_nested_model(layer, configs)
                 if cls in _CONTAINERS else [layer])
    return keras_weights.finish(out)


def _split_nested_model(layer: KerasLayer, configs: dict
                        ) -> list[KerasLayer]:
  """A nested model's one HDF5 group -> its layers, by weight name
  (`keras_weights.owner`), classes from the file's model config."""
  groups: dict[str, list[int]] = {}
  for i, path in enumerate(layer.weight_paths):
    groups.setdefault(keras_weights.owner(path), []).append(i)
  out = []
  for own, idx in groups.items():
    name = own.split('/')[-1]
    cls, config = configs.get(name, ('', None))
    out.append(KerasLayer(name, cls, [layer.weights[i] for i in idx],
                          [layer.weight_names[i] for i in idx],
                          tuple(layer.weight_paths[i] for i in idx), config))
  return out


def _read_keras_file(path: str) -> list[KerasLayer]:
  """Through Keras when it can load the file; else with h5py alone (custom
  classes such as keras-tcn's TCN without their package)."""
  import keras  # pylint: disable=g-import-not-at-top
  try:
    model = keras.saving.load_model(path, compile=False)
  except Exception as err:  # pylint: disable=broad-except
    try:
      return keras_archive.read_archive(path)
    except ValueError as raw_err:
      raise ValueError(f'Keras cannot load {path!r} ({err}) and reading it '
                       f'without Keras failed: {raw_err}') from raw_err
  return _from_keras_model(model)


def read_layers(source: Any) -> list[KerasLayer]:
  """Weight-carrying layers of a `keras.Model`, `.keras` or `.h5` file, or
  a SavedModel directory."""
  if isinstance(source, (str, os.PathLike)):
    path = os.fspath(source)
    if not os.path.exists(path):
      raise FileNotFoundError(f'Keras model file {path!r} does not exist.')
    if os.path.isdir(path):
      if not savedmodel.is_savedmodel(path):
        raise ValueError(f'Directory {path!r} is not a SavedModel (no '
                         'saved_model.pb).')
      return savedmodel.read_savedmodel(path)
    if path.endswith(('.h5', '.hdf5')) and not path.endswith('.weights.h5'):
      return read_h5(path)
    if path.endswith('.keras'):
      return _read_keras_file(path)
    raise ValueError(f'Unsupported Keras file {path!r}: give a .keras file, '
                     'a legacy .h5 file, a SavedModel directory, or a '
                     'keras.Model.')
  if not hasattr(source, 'layers'):
    raise ValueError(f'source must be a keras.Model or a path, got '
                     f'{type(source).__name__}.')
  return _from_keras_model(source)


# ------------------------------------------------------------- mapping ----


def keras_kind(layer: KerasLayer) -> str:
  """'bn', 'recurrent', 'depthwise' or 'dense' (Dense and Conv)."""
  names = set(layer.weight_names)
  if 'moving_mean' in names or layer.class_name == 'BatchNormalization':
    return 'bn'
  if 'recurrent_kernel' in names:
    return 'recurrent'
  if 'depthwise_kernel' in names or layer.class_name == 'DepthwiseConv2D':
    return 'depthwise'
  return 'dense'


def _flax_modules(params: dict, path=()) -> Iterator[tuple[tuple, dict]]:
  """Flax modules that own arrays, in creation order."""
  own = {k: v for k, v in params.items() if not isinstance(v, dict)}
  if own:
    yield path, own
  for k, v in params.items():
    if isinstance(v, dict):
      yield from _flax_modules(v, path + (k,))


def _flax_kind(own: dict) -> str:
  if 'recurrent_kernel' in own:
    return 'recurrent'
  if 'scale' in own:
    return 'bn'
  return 'dense'


def _convert(layer: KerasLayer, kind: str, own: dict, stats: dict | None
             ) -> tuple[dict, dict | None]:
  """Keras arrays -> (params, batch_stats) shaped like the Flax module."""
  w = dict(zip(layer.weight_names, layer.weights))
  if kind == 'bn':
    mean, var = w['moving_mean'], w['moving_variance']
    c = mean.shape
    p = {'scale': w.get('gamma', np.ones(c, np.float32)),
         'bias': w.get('beta', np.zeros(c, np.float32))}
    return p, {'mean': mean, 'var': var}
  if kind == 'depthwise':
    k = w.get('depthwise_kernel', w.get('kernel'))  # [kh, kw, C, mult=1]
    p = {'kernel': np.transpose(k, (0, 1, 3, 2))}
    if 'bias' in w:
      p['bias'] = w['bias']
    return p, None
  return {k: w[k] for k in own if k in w}, None


def _fits(layer: KerasLayer, kind: str, own: dict, stats) -> bool:
  try:
    p, s = _convert(layer, kind, own, stats)
  except KeyError:
    return False
  if set(p) != set(own):
    return False
  ok = all(np.shape(p[k]) == tuple(own[k].shape) for k in own)
  if stats is not None:
    ok = ok and s is not None and all(
        np.shape(s[k]) == tuple(stats[k].shape) for k in stats)
  return ok


def _mismatch(layer: KerasLayer, path: tuple, own: dict) -> str:
  return (f'Keras layer {layer.name!r} ({layer.class_name or "?"}: '
          f'{[tuple(a.shape) for a in layer.weights]}) does not fit Flax '
          f'module {"/".join(path)!r} '
          f'({ {k: tuple(v.shape) for k, v in own.items()} }).')


def _get(tree: dict, path: tuple):
  for k in path:
    tree = tree.get(k) if isinstance(tree, dict) else None
    if tree is None:
      return None
  return tree


def _set(tree: dict, path: tuple, value: dict) -> None:
  for k in path[:-1]:
    tree = tree[k]
  tree[path[-1]] = value


def creation_order(module, x_shape: Sequence[int]) -> list[tuple[str, ...]]:
  """Paths of `module`'s submodules in the order their `__call__` first
  runs, i.e. the order they create their parameters (pytrees sort dict
  keys, so 'Conv_10' < 'Conv_2' and 'backward' < 'forward' there)."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  order: list[tuple[str, ...]] = []

  def record(next_fun, args, kwargs, context):
    path = tuple(context.module.path)
    if context.method_name == '__call__' and path not in order:
      order.append(path)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda: module.init(jax.random.key(0),
                                       jnp.zeros(tuple(x_shape))))
  return order


def _in_order(params: dict, order: Sequence[tuple] | None):
  found = list(_flax_modules(params))
  if not order:
    return found
  rank = {p: i for i, p in enumerate(order)}
  return sorted(found, key=lambda pm: rank.get(pm[0], len(rank)))


def import_by_order(layers: Sequence[KerasLayer], variables: Any,
                    order: Sequence[tuple] | None = None) -> dict:
  """The generic mapping (module doc) into a copy of `variables`; `order`
  is `creation_order(module, x_shape)` (default: the dicts' key order)."""
  variables = {k: unfreeze(v) for k, v in dict(variables).items()}
  params, stats = variables['params'], variables.get('batch_stats', {})
  used = [False] * len(layers)
  for path, own in _in_order(params, order):
    st = _get(stats, path)
    kind = _flax_kind(own)
    cands = [i for i, lyr in enumerate(layers) if not used[i] and
             (keras_kind(lyr) == kind or
              (kind == 'dense' and keras_kind(lyr) == 'depthwise'))]
    if not cands:
      raise ValueError(f'No Keras layer left for Flax module '
                       f'{"/".join(path)!r} ({kind}); the Keras model has '
                       'fewer layers of that kind.')
    match = next((i for i in cands if _fits(layers[i], keras_kind(layers[i]),
                                             own, st)), None)
    if match is None:
      raise ValueError('Shape mismatch: ' + _mismatch(layers[cands[0]], path,
                                                      own))
    lyr = layers[match]
    used[match] = True
    p, s = _convert(lyr, keras_kind(lyr), own, st)
    _set(params, path, {k: np.asarray(v, own[k].dtype) for k, v in p.items()})
    if s is not None and st is not None:
      _set(stats, path, {k: np.asarray(v, st[k].dtype) for k, v in s.items()})
  left = [layers[i].name for i, u in enumerate(used) if not u]
  if left:
    raise ValueError(f'Keras layers {left} have no Flax counterpart in the '
                     'zoo model (another architecture or other options?).')
  return jax.tree.map(jnp.asarray, variables)


def unfreeze(tree):
  """A (frozen) variables tree as nested dicts of NumPy arrays (a copy)."""
  if hasattr(tree, 'items'):
    return {k: unfreeze(v) for k, v in tree.items()}
  return np.asarray(tree)


# ---------------------------------------------------------------- load ----


def importable() -> list[str]:
  """Zoo models with an importer (registered or the generic mapping)."""
  return model_registry.list_models()


def _num_classes(layers: Sequence[KerasLayer]) -> int:
  for lyr in reversed(layers):
    kernel = dict(zip(lyr.weight_names, lyr.weights)).get('kernel')
    if keras_kind(lyr) == 'dense' and kernel is not None and kernel.ndim == 2:
      return int(kernel.shape[-1])
  raise ValueError('Cannot infer num_classes: the Keras model has no Dense '
                   'layer; pass num_classes=.')


def load(name: str, source: Any, num_classes: int | None = None,
         input_shape: Sequence[int] | None = None, **model_kwargs
         ) -> tuple[Any, Any]:
  """`(module, variables)` of zoo model `name` with the Keras weights
  (`load_with_kwargs` without the kwargs)."""
  module, variables, _ = load_with_kwargs(name, source, num_classes,
                                          input_shape, **model_kwargs)
  return module, variables


def load_with_kwargs(name: str, source: Any, num_classes: int | None = None,
                     input_shape: Sequence[int] | None = None,
                     **model_kwargs) -> tuple[Any, Any, dict[str, Any]]:
  """`(module, variables, kwargs)` of zoo model `name` with the Keras
  weights; `models.get_model(name, K, **kwargs)` rebuilds the module
  (kwargs include those inferred from the checkpoint).

  Args:
    name: a registered zoo model (`importable()`).
    source: `keras.Model`, `.keras` or legacy `.h5` path, or SavedModel
      directory.
    num_classes: logits; default the last Dense layer's width.
    input_shape: one example's shape to build with; default the model's.
    **model_kwargs: options of the zoo model (must describe the same
      architecture as the Keras model; a model with `register_inference`
      fills in those the checkpoint shows, and rejects contradictions).
  """
  model_registry.check_model(name, {**model_kwargs, 'input_shape': None})
  layers = read_layers(source)
  k = num_classes if num_classes is not None else _num_classes(layers)
  if input_shape is not None:
    model_kwargs['input_shape'] = tuple(input_shape)
  init_shape = None
  if name in INFERENCE:
    try:
      model_kwargs, init_shape = INFERENCE.lookup(name)(layers, model_kwargs)
    except ValueError as err:  # the checkpoint named, then the reason
      where = (repr(os.fspath(source)) if isinstance(source, (str,
                                                              os.PathLike))
               else type(source).__name__)
      raise ValueError(f'Keras checkpoint {where} as zoo {name!r}: '
                       f'{err}') from None
  module = model_registry.get_model(name, k, **model_kwargs)
  shape = tuple(input_shape or init_shape or module.example_input_shape())
  template = jax.eval_shape(
      lambda: module.init(jax.random.key(0), jnp.zeros((1,) + shape)))
  template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template)
  if name in IMPORTERS:
    return (module, IMPORTERS.lookup(name)(layers, template, **model_kwargs),
            model_kwargs)
  order = creation_order(module, (1,) + shape)
  return module, import_by_order(layers, template, order), model_kwargs
