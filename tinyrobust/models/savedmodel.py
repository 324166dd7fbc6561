"""Read a TensorFlow SavedModel directory's Keras weights by name.

    layers = savedmodel.read_savedmodel('kws_ref_model/')  # then as HDF5

The variables are read from the directory's checkpoint
(`tf.train.load_checkpoint('<dir>/variables/variables')`), which works
where `tf.saved_model.load` does not (TensorFlow 2.21 fails on older Keras
SavedModels that carry optimizer slots: "'_UserObject' object has no
attribute 'add_slot'"). Nothing of the graph is run.

Which arrays, in which order, under which names:

* the checkpoint's object graph is walked from the root; the optimizer's
  branch (its slots, step counter, learning rate), Keras-2 metrics
  (`keras_api`) and Keras 3 seed generators are left out; non-float
  arrays too;
* each array's name is its variable's full name ('dense/kernel',
  'tcn/residual_block_0/conv1D_0/kernel'; Keras 2 and Keras 3 alike),
  or its object path when the checkpoint has none
  ('layer_with_weights-0/kernel');
* arrays are ordered by checkpoint key (Keras 2: `layer_with_weights-<i>`,
  Keras 3 `model.export`: `variables/<i>`, both model order, first); a
  variable tracked under several keys is taken once; arrays are grouped
  into layers by the layer part of their name (`keras_weights.owner`:
  'sequential/dense/kernel' -> 'sequential/dense', 'lstm/lstm_cell/kernel'
  -> 'lstm'), in order of first appearance, each layer's arrays in Keras'
  order (kernel, bias, gamma, beta, moving mean and variance), so the
  result maps like a weights-only HDF5 file (`keras_import`). Layer
  classes are unknown; Bidirectional wrappers are split by their
  forward/backward paths and Keras 3 depthwise kernels are recognised by
  layer name (`keras_weights.label_depthwise`).

Configs: a SavedModel written by TF 2.x Keras (Keras 2) also holds
`keras_metadata.pb`, each layer's class name and `get_config()` as JSON.
A keras-tcn `TCN` found there gets its class name and config (dilations,
stacks, padding, skip connections: what its weights cannot record), as from
a full-model HDF5 file; Keras 3 SavedModels have no such file, so their
keras-tcn options must be given (`keras_tcn`).
"""

from __future__ import annotations

import collections
import json
import os

import numpy as np

from tinyrobust.models import keras_weights
from tinyrobust.models.keras_weights import KerasLayer

_SKIP_CHILDREN = ('keras_api', 'signatures')
# Keras' own variable order within a layer (checkpoint keys sort by name).
_KERAS_ORDER = ('kernel', 'depthwise_kernel', 'pointwise_kernel',
                'recurrent_kernel', 'bias', 'gamma', 'beta', 'moving_mean',
                'moving_variance')
_VALUE = '/.ATTRIBUTES/VARIABLE_VALUE'


def is_savedmodel(path: str) -> bool:
  """Whether `path` is a SavedModel directory (has saved_model.pb)."""
  return os.path.isdir(path) and (
      os.path.exists(os.path.join(path, 'saved_model.pb')) or
      os.path.exists(os.path.join(path, 'saved_model.pbtxt')))


def _object_graph(reader):
  # pylint: disable-next=g-import-not-at-top
  from tensorflow.core.protobuf import trackable_object_graph_pb2 as pb
  graph = pb.TrackableObjectGraph()
  graph.ParseFromString(reader.get_tensor('_CHECKPOINTABLE_OBJECT_GRAPH'))
  return graph


def _model_variables(graph) -> list[tuple[str, str]]:
  """(checkpoint key, full name) of the model's variables (module doc)."""
  found, seen = [], {0}
  queue = collections.deque([(0, ())])
  while queue:
    node_id, path = queue.popleft()
    node = graph.nodes[node_id]
    for attr in node.attributes:
      if attr.name == 'VARIABLE_VALUE':
        found.append((attr.checkpoint_key, attr.full_name))
    for child in node.children:
      name = child.local_name
      if child.node_id in seen or name in _SKIP_CHILDREN:
        continue
      # The optimizer's own variables are skipped; Keras 3 lists there the
      # model variables it trains, some reachable from nowhere else.
      if path == ('optimizer',) and name != '_trainable_variables':
        continue
      seen.add(child.node_id)
      queue.append((child.node_id, path + (name,)))
  return found


def _name(key: str, full_name: str) -> str:
  if full_name:
    return full_name.split(':')[0]
  return key[:-len(_VALUE)] if key.endswith(_VALUE) else key


def _keras_order(arrays: list[tuple[str, np.ndarray]]):
  """A layer's (name, array) pairs in Keras' variable order: sublayers
  in order of appearance, each as `_KERAS_ORDER`."""
  prefixes: dict[str, int] = {}
  for name, _ in arrays:
    prefixes.setdefault(name.rsplit('/', 1)[0], len(prefixes))
  rank = lambda n: (_KERAS_ORDER.index(n) if n in _KERAS_ORDER
                    else len(_KERAS_ORDER))
  return sorted(arrays, key=lambda na: (
      prefixes[na[0].rsplit('/', 1)[0]], rank(keras_weights.short(na[0]))))


def _rank(key: str) -> int:
  """Keys whose order is the model's first (Keras 2 `layer_with_weights-i`,
  Keras 3 export `variables/i`), the optimizer's list of trained variables
  last."""
  if key.startswith(('layer_with_weights-', 'variables/')):
    return 0
  return 2 if key.startswith('optimizer/') else 1


def keras_metadata(path: str) -> dict[str, tuple[str, dict]]:
  """`{layer name: (class name, config)}` from the Keras-2 SavedModel
  `path`'s `keras_metadata.pb` ({} without one; nodes whose metadata is
  not a layer's JSON are skipped).

  Raises:
    ValueError: the file is not a Keras `SavedMetadata` proto (naming it).
  """
  meta = os.path.join(path, 'keras_metadata.pb')
  if not os.path.exists(meta):
    return {}
  # pylint: disable-next=g-import-not-at-top
  from tensorflow.python.keras.protobuf import saved_metadata_pb2 as pb
  saved = pb.SavedMetadata()
  with open(meta, 'rb') as f:
    try:
      saved.ParseFromString(f.read())
    except Exception as err:  # pylint: disable=broad-except
      raise ValueError(f'SavedModel {path!r}: keras_metadata.pb is not a '
                       f'Keras SavedMetadata proto ({err}).') from None
  out = {}
  for node in saved.nodes:
    try:
      d = json.loads(node.metadata)
    except ValueError:
      continue
    if isinstance(d, dict) and d.get('name') and d.get('class_name'):
      out.setdefault(str(d['name']), (str(d['class_name']),
                                      d.get('config') or {}))
  return out


def _with_tcn_config(layer: KerasLayer, meta: dict) -> KerasLayer:
  """`layer` with the class name and config of a keras-tcn TCN in `meta`."""
  cls, config = meta.get(layer.name, ('', None))
  if cls != 'TCN':
    return layer
  return layer._replace(class_name=cls, config=config)


def read_savedmodel(path: str) -> list[KerasLayer]:
  """Weight-carrying layers of the Keras model in SavedModel dir `path`.

  Returns:
    `KerasLayer`s in model order with empty class names, but a keras-tcn
    TCN's from `keras_metadata.pb` (module doc).
  """
  prefix = os.path.join(path, 'variables', 'variables')
  if not os.path.exists(prefix + '.index'):
    raise ValueError(f'SavedModel {path!r} has no variables/variables.index '
                     '(a model without variables, or not a SavedModel).')
  # TensorFlow is a heavy optional dependency, kept off accelerators.
  from tinyrobust import tf_setup  # pylint: disable=g-import-not-at-top
  tf = tf_setup.import_tf()
  reader = tf.train.load_checkpoint(prefix)
  dtypes = reader.get_variable_to_dtype_map()
  entries = []
  for key, full_name in _model_variables(_object_graph(reader)):
    name = _name(key, full_name)
    if key not in dtypes or not dtypes[key].is_floating:
      continue
    if any(p.startswith('seed_generator') for p in name.split('/')):
      continue
    entries.append((_rank(key), keras_weights.natural_key(key), name, key))
  entries.sort(key=lambda e: e[:2])
  layers: dict[str, list[tuple[str, np.ndarray]]] = {}
  done = set()
  for _, _, name, key in entries:
    if name in done:  # one variable tracked under several keys
      continue
    done.add(name)
    layers.setdefault(keras_weights.owner(name), []).append(
        (name, reader.get_tensor(key)))
  if not layers:
    raise ValueError(f'SavedModel {path!r} holds no float model variables.')
  layers = {k: _keras_order(v) for k, v in layers.items()}
  meta = keras_metadata(path)
  out = [KerasLayer(layer.split('/')[-1], '',
                    [np.asarray(a) for _, a in arrays],
                    [keras_weights.short(n) for n, _ in arrays],
                    tuple(n for n, _ in arrays))
         for layer, arrays in layers.items()]
  return keras_weights.finish([_with_tcn_config(layer, meta)
                               for layer in out])
