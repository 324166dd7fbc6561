"""Import keras-tcn checkpoints into the zoo `tcn` (`models/tcn.py`).

    module, variables = keras_import.load('tcn', 'har_tcn.h5')
    module, variables = keras_import.load('tcn', 'w.h5', dilations=(1, 2, 4))

keras-tcn (philipperemy/keras-tcn) saves its whole `TCN` as one Keras layer
whose arrays are nested by path, e.g. (Keras 2 and 3 names):

    tcn/residual_block_<b>/conv1D_<0|1>/{kernel,bias}
    tcn/residual_block_<b>/matching_conv1D/{kernel,bias}     (1x1, block 0)
    tcn/residual_block_<b>/<norm>/{gamma,beta[,moving_mean,moving_variance]}

with <norm> 'norm_<k>' or Keras' own 'batch_normalization_<n>' /
'layer_normalization_<n>' (the block's first is after conv1D_0); a `.keras`
archive read without keras-tcn names them 'residual_block_<b>/conv1D_0/
vars/<i>' and '.../batch_norm_layers/<bn>/vars/<i>' (`keras_archive`).
Each array maps by its path onto `residual_block_<b>/{conv1D_0, conv1D_1,
matching_conv1D, norm_0, norm_1}` of the zoo model; the other Keras layers
(the Dense head) map by `keras_import`'s generic order mapping. Older
keras-tcn's weight normalisation (`use_weight_norm`, a direction `v` in
'kernel' and a gain `g`) is folded into the kernel: `g v / ||v||` over all
axes but the output one (tensorflow-addons' `WeightNormalization`).

Options, so that a user does not have to guess them:

* from the weights: `nb_filters`, `kernel_size`, the number of blocks, the
  input channels, `use_batch_norm` / `use_layer_norm` (with Keras' epsilon
  1e-3), and whether block 0 has the 1x1 matching convolution (it must iff
  the input channels differ from `nb_filters`);
* from the TCN's Keras config when the checkpoint carries one
  (full-model HDF5, `.keras`, a Keras-2 SavedModel's `keras_metadata.pb`):
  `dilations`, `nb_stacks`, `padding`, `use_skip_connections`;
  `return_sequences=True`, `go_backwards`, activations other than ReLU and
  per-block filter lists of different widths have no zoo counterpart and
  are errors;
* otherwise (weights-only files, Keras 3 SavedModels) `dilations`,
  `padding` and `use_skip_connections` cannot be read from the weights (a
  TCN without skip connections or with 'same' padding has the same arrays
  as keras-tcn's default one but other outputs), so they must be given:
  leaving any out is an error naming them with keras-tcn's defaults
  (`dilations=(1, 2, 4, 8, 16, 32)`, 'causal', True) rather than a
  silently different model; `nb_stacks` = blocks / len(dilations), and a
  block count that no stack of the dilations makes is an error asking for
  `dilations=`.

A given option that contradicts the checkpoint, missing or extra weight
paths, and shape mismatches are ValueErrors naming the paths and shapes.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tinyrobust.models import keras_import
from tinyrobust.models import keras_weights
from tinyrobust.models import registry as model_registry
from tinyrobust.models.keras_weights import KerasLayer

_BLOCK = re.compile(r'residual_block_(\d+)$')
_CONV = re.compile(r'conv1D_(\d+)$|matching_conv1D$')
_NORM = re.compile(r'norm_(\d+)$')
_VARS = {'conv': ('kernel', 'bias'),
         'batch': ('gamma', 'beta', 'moving_mean', 'moving_variance'),
         'layer': ('gamma', 'beta')}
KERAS_TCN_DILATIONS = (1, 2, 4, 8, 16, 32)  # keras-tcn's TCN default
# What a TCN's weights do not record, with keras-tcn's defaults.
UNRECORDED = {'dilations': KERAS_TCN_DILATIONS, 'padding': 'causal',
              'use_skip_connections': True}
_KERAS_EPSILON = 1e-3
Blocks = dict[int, dict[str, dict[str, np.ndarray]]]


def is_tcn(layer: KerasLayer) -> bool:
  """Whether a Keras layer is a keras-tcn `TCN` (arrays nested by block)."""
  return layer.class_name == 'TCN' or any(
      _BLOCK.match(p) for path in layer.weight_paths for p in path.split('/'))


def _sublayer(rest: Sequence[str], norms: list[str]) -> str | None:
  """'conv1D_0', 'matching_conv1D', 'norm_<k>' or None for the path parts
  after 'residual_block_<b>' (last part, the array's name, excluded)."""
  for part in rest:
    if _CONV.match(part):
      return part
  for part in rest:
    if _NORM.match(part):
      return part
  for part in rest:
    if 'normalization' in part:
      if part not in norms:
        norms.append(part)
      return part
  return None


def _name_raw(sub: str, group: dict) -> dict:
  """Index-named arrays ('0', '1') of a `.keras` archive -> Keras names."""
  if not all(k.isdigit() for k in group):
    return group
  kind = ('conv' if _CONV.match(sub) else
          'batch' if 'batch' in sub else 'layer')
  names = _VARS[kind]
  if len(group) > len(names):
    raise ValueError(f'keras-tcn sublayer {sub!r} has {len(group)} arrays; '
                     f'a {kind} layer has {len(names)} ({names}).')
  return {names[int(i)]: a for i, a in group.items()}


def parse(layer: KerasLayer) -> Blocks:
  """block -> sublayer ('conv1D_0', 'conv1D_1', 'matching_conv1D',
  'norm_0', 'norm_1') -> array name -> array (module doc)."""
  paths = layer.weight_paths or tuple(layer.weight_names)
  raw: dict[int, dict[str, dict[str, np.ndarray]]] = {}
  norms: dict[int, list[str]] = {}
  unknown = []
  for path, arr in zip(paths, layer.weights):
    parts = path.split(':')[0].split('/')
    idx = next((i for i, p in enumerate(parts) if _BLOCK.match(p)), None)
    if idx is None:
      unknown.append(path)
      continue
    b = int(_BLOCK.match(parts[idx]).group(1))
    sub = _sublayer(parts[idx + 1:-1], norms.setdefault(b, []))
    if sub is None:
      unknown.append(path)
      continue
    arr = np.asarray(arr)
    if not np.issubdtype(arr.dtype, np.floating):
      continue  # weight normalisation's `initialized` flag
    raw.setdefault(b, {}).setdefault(sub, {})[parts[-1]] = arr
  if unknown:
    raise ValueError(f'keras-tcn layer {layer.name!r}: weight paths outside '
                     f'residual_block_<b>/{{conv1D_0, conv1D_1, '
                     f'matching_conv1D, norms}}: {unknown}.')
  blocks: Blocks = {}
  for b, subs in raw.items():
    out = blocks.setdefault(b, {})
    ordered = sorted(norms.get(b, []), key=keras_weights.natural_key)
    for sub, group in subs.items():
      name = sub
      if sub in ordered:  # Keras-named norm: its rank in the block
        name = f'norm_{ordered.index(sub)}'
      out[name] = _name_raw(sub, group)
    _fold_weight_norm(out)
  return blocks


def _fold_weight_norm(block: dict[str, dict[str, np.ndarray]]) -> None:
  """Gain `g` (beside the conv, or alone in 'norm_<k>') and direction `v`
  (the conv's 'kernel') -> one kernel `g v / ||v||` (module doc)."""
  for k in (0, 1):
    norm = block.get(f'norm_{k}', {})
    if 'g' in norm and set(norm) <= {'g'}:
      block.setdefault(f'conv1D_{k}', {})['g'] = block.pop(f'norm_{k}')['g']
  for conv in block.values():
    if 'g' in conv and 'kernel' in conv:
      v = conv['kernel']
      norm = np.sqrt(np.maximum(np.sum(np.square(v), axis=(0, 1)), 1e-12))
      conv['kernel'] = (v / norm * conv.pop('g')).astype(v.dtype)


# ------------------------------------------------------------ options ----


class TcnShape(NamedTuple):
  """What the weights of a keras-tcn TCN show (module doc)."""
  blocks: int
  nb_filters: int
  kernel_size: int
  in_channels: int
  norm: str | None  # 'batch', 'layer' or None


def _kernel(blocks: Blocks, b: int, sub: str) -> np.ndarray:
  conv = blocks[b].get(sub, {})
  if 'kernel' not in conv:
    raise ValueError(f'keras-tcn residual_block_{b} has no {sub} kernel '
                     f'(found {sorted(blocks[b])}).')
  return conv['kernel']


def shape_of(blocks: Blocks) -> TcnShape:
  """Filters, kernel size, blocks, input channels and norm of parsed
  keras-tcn weights; ValueError on gaps or per-block widths."""
  n = max(blocks) + 1 if blocks else 0
  missing = sorted(set(range(n)) - set(blocks))
  if missing or not blocks:
    raise ValueError(f'keras-tcn blocks {sorted(blocks)}: residual blocks '
                     f'{missing or [0]} are missing.')
  k0 = _kernel(blocks, 0, 'conv1D_0')
  widths = [int(_kernel(blocks, b, 'conv1D_0').shape[-1]) for b in range(n)]
  if len(set(widths)) > 1:
    raise ValueError(f'keras-tcn blocks have {widths} filters; the zoo tcn '
                     'has one nb_filters for every block.')
  has = lambda key: any(key in sub for blk in blocks.values()
                        for name, sub in blk.items() if name.startswith('norm'))
  norm = 'batch' if has('moving_mean') else 'layer' if has('gamma') else None
  return TcnShape(n, widths[0], int(k0.shape[0]), int(k0.shape[1]), norm)


def _from_config(config: dict | None) -> dict[str, Any]:
  """The zoo options a keras-tcn `TCN` config fixes; errors for settings
  the zoo tcn cannot express."""
  if not config:
    return {}
  bad = {k: config.get(k) for k, ok in (
      ('return_sequences', False), ('go_backwards', False),
      ('activation', 'relu'), ('return_state', False))
         if k in config and config[k] != ok}
  if bad:
    raise ValueError(f'keras-tcn TCN settings {bad} have no counterpart in '
                     'the zoo tcn (last time step, forward, ReLU).')
  out = {k: config[k] for k in ('nb_stacks', 'padding',
                                'use_skip_connections') if k in config}
  if 'dilations' in config:
    out['dilations'] = tuple(int(d) for d in config['dilations'])
  return out


def _agree(given: dict, key: str, value: Any, source: str) -> None:
  if key in given and given[key] is not None:
    mine = given[key]
    same = (tuple(mine) == tuple(value) if isinstance(value, tuple)
            else mine == value)
    if not same:
      raise ValueError(f'{key}={mine!r} contradicts the keras-tcn '
                       f'checkpoint: its {source} has {key}={value!r}.')


@keras_import.register_inference('tcn')
def infer_options(layers: Sequence[KerasLayer], model_kwargs: dict
                  ) -> tuple[dict, tuple[int, ...] | None]:
  """`register_inference` hook of 'tcn': zoo options and an init shape
  from a keras-tcn checkpoint (module doc); unchanged without one."""
  tcns = [layer for layer in layers if is_tcn(layer)]
  if not tcns:
    return model_kwargs, None
  if len(tcns) > 1:
    raise ValueError(f'{len(tcns)} keras-tcn TCN layers '
                     f'({[t.name for t in tcns]}); the zoo tcn has one.')
  shape = shape_of(parse(tcns[0]))
  kw = dict(model_kwargs)
  weights = {'nb_filters': shape.nb_filters, 'kernel_size': shape.kernel_size,
             'use_batch_norm': shape.norm == 'batch',
             'use_layer_norm': shape.norm == 'layer'}
  for key, value in weights.items():
    _agree(kw, key, value, 'weights')
    kw[key] = value
  if shape.norm:
    kw.setdefault('norm_epsilon', _KERAS_EPSILON)
  config = _from_config(tcns[0].config)
  for key, value in config.items():
    _agree(kw, key, value, 'config')
    kw[key] = value
  if config:  # a TCN config: keras-tcn's own defaults for keys it lacks
    kw.update({k: v for k, v in UNRECORDED.items() if kw.get(k) is None})
  unknown = [k for k in UNRECORDED if kw.get(k) is None]
  if unknown:
    raise ValueError(
        f'The keras-tcn layer {tcns[0].name!r} comes without its TCN config '
        f'(a weights-only file or a SavedModel without keras_metadata.pb): '
        f'its weights give {shape.blocks} residual blocks, nb_filters='
        f'{shape.nb_filters}, kernel_size={shape.kernel_size}, but not '
        f'{unknown}. Pass them as the model was built (keras-tcn\'s '
        f'defaults: ' + ', '.join(f'{k}={UNRECORDED[k]!r}' for k in unknown)
        + ').')
  dil = tuple(kw['dilations'])
  if 'nb_stacks' not in kw and shape.blocks % len(dil) == 0:
    kw['nb_stacks'] = shape.blocks // len(dil)
  stacks = kw.get('nb_stacks', 1)
  if stacks * len(dil) != shape.blocks:
    raise ValueError(
        f'The keras-tcn checkpoint has {shape.blocks} residual blocks; '
        f'dilations={dil} with nb_stacks={stacks} makes '
        f'{stacks * len(dil)}. Weights do not record dilations: pass '
        'dilations= (and nb_stacks=) as the model was built.')
  rf = 1 + 2 * (shape.kernel_size - 1) * stacks * sum(dil)
  init = tuple(kw['input_shape']) if kw.get('input_shape') else (
      rf, shape.in_channels)
  return kw, init


# ------------------------------------------------------------- import ----


def _expected(params: dict) -> dict[str, dict]:
  """'residual_block_<b>/<sub>' -> the zoo module's params."""
  return {f'{b}/{sub}': own for b, blk in params.items()
          if _BLOCK.match(b) for sub, own in blk.items()
          if isinstance(own, dict)}


def _assign(key: str, arrays: dict, params: dict, stats: dict) -> None:
  """One Keras sublayer's arrays into the zoo module `key` (in place)."""
  block, sub = key.split('/')
  own, st = params[block][sub], stats.get(block, {}).get(sub)
  if 'kernel' in own:
    new = {'kernel': arrays.get('kernel'), 'bias': arrays.get('bias')}
    new_st = None
  else:
    c = own['scale'].shape
    new = {'scale': arrays.get('gamma', np.ones(c, np.float32)),
           'bias': arrays.get('beta', np.zeros(c, np.float32))}
    new_st = ({'mean': arrays.get('moving_mean'),
               'var': arrays.get('moving_variance')} if st is not None
              else None)
  for tree, ref in ((new, own), (new_st, st)):
    for name, arr in (tree or {}).items():
      if arr is None or tuple(np.shape(arr)) != tuple(ref[name].shape):
        got = None if arr is None else tuple(np.shape(arr))
        raise ValueError(f'keras-tcn {key}: array for {name!r} has shape '
                         f'{got}, the zoo tcn needs {tuple(ref[name].shape)}.')
      ref[name] = np.asarray(arr, ref[name].dtype)  # in place


@keras_import.register_importer('tcn')
def import_tcn(layers: Sequence[KerasLayer], variables: Any,
               **model_kwargs) -> dict:
  """keras-tcn `TCN` + Dense (module doc) into the zoo tcn's `variables`;
  a TCN written out as plain Keras layers maps by the generic mapping."""
  variables = keras_import.unfreeze(variables)
  params = variables['params']
  k = int(params['classifier']['kernel'].shape[-1])
  module = model_registry.get_model('tcn', k, **model_kwargs)
  tcns = [layer for layer in layers if is_tcn(layer)]
  if not tcns:
    shape = (1,) + tuple(module.example_input_shape())
    return keras_import.import_by_order(
        layers, variables, keras_import.creation_order(module, shape))
  found = {f'residual_block_{b}/{sub}': arrays
           for b, blk in parse(tcns[0]).items() for sub, arrays in blk.items()}
  want = _expected(params)
  extra = sorted(set(found) - set(want))
  missing = sorted(set(want) - set(found))
  if extra or missing:
    raise ValueError(
        f'keras-tcn layer {tcns[0].name!r} does not match the zoo tcn: '
        f'Keras sublayers without a zoo module: {extra}; zoo modules '
        f'without Keras weights: {missing}.')
  stats = variables.get('batch_stats', {})
  for key in want:
    _assign(key, found[key], params, stats)
  rest = [layer for layer in layers if layer is not tcns[0]]
  head = {'params': {n: v for n, v in params.items() if not _BLOCK.match(n)}}
  head = keras_import.import_by_order(rest, head)
  out = jax.tree.map(jnp.asarray, variables)
  out['params'].update(head['params'])
  return out

