"""Read a Keras 3 `.keras` archive with h5py alone (no Keras classes).

`keras_import.read_layers` loads `.keras` files through Keras; a file whose
config names a class Keras cannot find (keras-tcn's `TCN` when keras-tcn is
not installed) is read here instead. The archive is a zip of `config.json`
(the model config) and `model.weights.h5`, where each layer's arrays sit
under `layers/<group>/vars/<i>` in the layer's variable order and a nested
layer's under `layers/<group>/<attribute>/.../vars/<i>`; <group> is the
snake-cased class name, numbered per class in model order ('dense',
'dense_1'), not the layer's name.

Standard layers get their Keras 3 variable names from the class (table
`_VAR_NAMES`; a recurrent cell nested in a `Bidirectional` wrapper by its
position); a layer that nests others keeps every array with its path
('tcn/residual_block_0/conv1D_0/vars/0'), for a path-aware importer
(`keras_tcn`). Other classes with weights are a ValueError naming them.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from typing import Any

import numpy as np

from tinyrobust.models import keras_weights
from tinyrobust.models.keras_weights import KerasLayer

_KERNEL_BIAS = ('kernel', 'bias')
_VAR_NAMES = {
    'Dense': _KERNEL_BIAS, 'Conv1D': _KERNEL_BIAS, 'Conv2D': _KERNEL_BIAS,
    'DepthwiseConv2D': _KERNEL_BIAS,
    'LayerNormalization': ('gamma', 'beta'),
    'LSTM': ('kernel', 'recurrent_kernel', 'bias'),
    'GRU': ('kernel', 'recurrent_kernel', 'bias'),
}
_CONTAINERS = ('Functional', 'Sequential', 'Model')


def _bn_names(config: dict) -> tuple[str, ...]:
  return ((('gamma',) if config.get('scale', True) else ()) +
          (('beta',) if config.get('center', True) else ()) +
          ('moving_mean', 'moving_variance'))


def _arrays(group, prefix: str) -> list[tuple[str, np.ndarray]]:
  """Every `vars/<i>` array under `group`, paths relative to it."""
  import h5py  # pylint: disable=g-import-not-at-top
  found = []

  def visit(name, obj):
    parts = name.split('/')
    if isinstance(obj, h5py.Dataset) and len(parts) >= 2 and \
        parts[-2] == 'vars':
      found.append((f'{prefix}/{name}', np.asarray(obj)))

  group.visititems(visit)
  return sorted(found, key=lambda pa: keras_weights.natural_key(pa[0]))


def _own_vars(group) -> list[np.ndarray]:
  if 'vars' not in group:
    return []
  v = group['vars']
  return [np.asarray(v[k]) for k in sorted(v, key=int)]


def _nested_name(path: str) -> str:
  """'<...>/cell/vars/1' (a recurrent cell, e.g. in a Bidirectional
  wrapper) -> 'recurrent_kernel'; other nested arrays keep their index."""
  parts = path.split('/')
  if len(parts) >= 3 and parts[-3] == 'cell':
    return _VAR_NAMES['LSTM'][int(parts[-1])]
  return parts[-1]


def _layer(group, lyr: dict) -> KerasLayer | None:
  cls, cfg = lyr.get('class_name', ''), lyr.get('config', {})
  name = cfg.get('name', lyr.get('name', ''))
  recurrent = cls in ('LSTM', 'GRU')
  own = _own_vars(group['cell'] if recurrent and 'cell' in group else group)
  nested = [a for a in _arrays(group, name)
            if not (a[0].startswith(f'{name}/vars/') or
                    (recurrent and a[0].startswith(f'{name}/cell/vars/')))]
  if not own and not nested:
    return None
  if nested and not own:
    return KerasLayer(name, cls, [a for _, a in nested],
                      [_nested_name(p) for p, _ in nested],
                      tuple(p for p, _ in nested), cfg)
  names = (_bn_names(cfg) if cls == 'BatchNormalization'
           else _VAR_NAMES.get(cls))
  if nested or names is None or len(own) > len(names):
    known = ', '.join(sorted(_VAR_NAMES) + ['BatchNormalization'])
    raise ValueError(
        f'Layer {name!r} of class {cls!r} in the .keras file cannot be read '
        f'without its Keras class (read here: {known}, and layers that '
        'nest others); install the package that defines it so that Keras '
        'can load the file.')
  names = list(names[:len(own)])
  return KerasLayer(name, cls, own, names,
                    tuple(f'{name}/{n}' for n in names), cfg)


def _snake(class_name: str) -> str:
  """Keras' `naming.to_snake_case`, which names the archive's groups."""
  name = re.sub(r'\W+', '', class_name)
  name = re.sub('(.)([A-Z][a-z]+)', r'\1_\2', name)
  return re.sub('([a-z])([A-Z])', r'\1_\2', name).lower()


def _walk(group, config: dict) -> list[KerasLayer]:
  """A model's layers: Keras saves the i-th layer of a class under its
  snake-cased class name ('dense', 'dense_1', ...), not its layer name."""
  out, used = [], {}
  sequential = config.get('class_name') == 'Sequential'
  for lyr in config.get('config', {}).get('layers', []):
    cls = lyr.get('class_name', '')
    if sequential and cls == 'InputLayer':
      continue  # not among a Sequential model's `layers`
    key = _snake(cls)
    used[key] = used.get(key, -1) + 1
    key = key if used[key] == 0 else f'{key}_{used[key]}'
    if key not in group:
      continue
    if cls in _CONTAINERS and 'layers' in group[key]:
      out.extend(_walk(group[key]['layers'], lyr))
      continue
    layer = _layer(group[key], lyr)
    if layer is not None:
      out.append(layer)
  return out


def read_archive(path: str) -> list[KerasLayer]:
  """Weight-carrying layers of a `.keras` file, in model order."""
  import h5py  # pylint: disable=g-import-not-at-top
  try:
    with zipfile.ZipFile(path) as z:
      config: dict[str, Any] = json.loads(z.read('config.json'))
      data = z.read('model.weights.h5')
  except (zipfile.BadZipFile, KeyError) as err:
    raise ValueError(f'{path!r} is not a Keras 3 .keras archive '
                     f'(config.json + model.weights.h5): {err}.') from err
  with h5py.File(io.BytesIO(data), 'r') as f:
    if 'layers' not in f:
      raise ValueError(f'{path!r}: model.weights.h5 has no `layers` group.')
    return keras_weights.finish(_walk(f['layers'], config))

