"""Models trained elsewhere: a Keras file, a SavedModel or a run workdir.

    m = trained_elsewhere.load('/runs/kws_dscnn')                  # workdir
    m = trained_elsewhere.load({'path': 'kws_ref_model/',          # SavedModel
                                'model': 'dscnn', 'kwargs': {}})
    logits = m.apply_fn(m.variables, x)

One loader for every place that takes an already trained model (the
surrogate of a `.tflite` target, `evaluation.tflite_target`; a study entry
that names a trained model, `studies.robustness`). Sources (`KINDS`):

* 'workdir': a tinyrobust run directory (`config.json` and `best.ckpt`,
  `train.load_trained`); its dataset is known (`config.data.name`);
* 'keras': a Keras `.h5` / `.hdf5` / `.keras` file, and 'savedmodel': a
  TensorFlow SavedModel directory (`saved_model.pb`), both imported with
  `models.keras_import.load` onto the zoo model named by `model` with its
  `kwargs`; their dataset is whatever the caller says it is.

`source` records what was loaded: kind, absolute path, sha256 of the file
(of a directory: of its files' relative paths and bytes, sorted), zoo model
name, kwargs, dataset (None when unknown) and whether it was trained
elsewhere (every kind but a workdir).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from typing import Any, Mapping

from tinyrobust import config_io
from tinyrobust import fileio
from tinyrobust import train as train_lib
from tinyrobust.models import keras_import
from tinyrobust.models import savedmodel

KINDS = ('workdir', 'keras', 'savedmodel')
KERAS_SUFFIXES = ('.h5', '.hdf5', '.keras')
ALLOWED = ('a tinyrobust run workdir (config.json and best.ckpt), a Keras '
           f'{"/".join(KERAS_SUFFIXES)} file or a SavedModel directory '
           '(saved_model.pb); Keras files and SavedModels also need '
           "'model' (a zoo model name) and optionally 'kwargs'")
SPEC_KEYS = ('path', 'model', 'kwargs', 'num_classes', 'input_shape', 'name')


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """A loaded model.

  Attributes:
    name: its label (the spec's 'name', else the path's last component).
    model: the Flax module (`model.apply(variables, x, train=False)`).
    variables: its variables.
    source: what was loaded (module docstring).
  """
  name: str
  model: Any
  variables: Any
  source: dict[str, Any]

  @property
  def apply_fn(self):
    return functools.partial(self.model.apply, train=False)


def kind_of(path: str) -> str:
  """The `KINDS` entry of `path`.

  Raises:
    ValueError: the path is missing or none of `KINDS` (naming it and what
      is allowed).
  """
  if not isinstance(path, (str, os.PathLike)) or not str(path):
    raise ValueError(f'A trained model path must be a non-empty string, got '
                     f'{path!r}; allowed: {ALLOWED}.')
  path = os.fspath(path)
  if not os.path.exists(path):
    raise ValueError(f'Trained model {path!r} does not exist; allowed: '
                     f'{ALLOWED}.')
  if os.path.isdir(path):
    if os.path.exists(os.path.join(path, 'config.json')):
      return 'workdir'
    if savedmodel.is_savedmodel(path):
      return 'savedmodel'
    raise ValueError(f'Directory {path!r} is neither a tinyrobust run '
                     f'(no config.json) nor a SavedModel (no saved_model.pb);'
                     f' allowed: {ALLOWED}.')
  if path.lower().endswith(KERAS_SUFFIXES):
    return 'keras'
  raise ValueError(f'File {path!r} is not a Keras file (suffix not in '
                   f'{KERAS_SUFFIXES}); allowed: {ALLOWED}.')


def sha256(path: str) -> str:
  """sha256 of a file, or of a directory's sorted relative paths and bytes."""
  h = hashlib.sha256()
  if os.path.isfile(path):
    files = [(os.path.basename(path), path)]
  else:
    files = sorted(
        (os.path.relpath(os.path.join(d, f), path), os.path.join(d, f))
        for d, _, names in os.walk(path) for f in names
        if not f.startswith('.'))
  for rel, full in files:
    if len(files) > 1:
      h.update(rel.encode() + b'\0')
    with open(full, 'rb') as f:
      for block in iter(lambda: f.read(1 << 20), b''):
        h.update(block)
  return h.hexdigest()


def check_spec(spec: Any) -> dict[str, Any]:
  """A spec as a dict with 'path' (and 'model' unless a workdir), checked
  without loading anything heavy (paths, kinds, the zoo model's name)."""
  if isinstance(spec, (str, os.PathLike)):
    spec = {'path': os.fspath(spec)}
  spec = config_io.to_dict(spec) if hasattr(spec, 'to_dict') else spec
  if not isinstance(spec, Mapping):
    raise ValueError(f'A trained model must be a path or a dict with keys '
                     f'{SPEC_KEYS}, got {type(spec).__name__}; allowed: '
                     f'{ALLOWED}.')
  spec = dict(spec)
  spec.pop('kind', None)  # a checked spec again
  unknown = sorted(set(spec) - set(SPEC_KEYS))
  if unknown:
    raise ValueError(f'Unknown trained model key(s) {unknown}; valid: '
                     f'{", ".join(SPEC_KEYS)}.')
  kind = kind_of(spec.get('path'))
  if kind == 'workdir':
    extra = sorted(k for k in ('model', 'kwargs', 'num_classes',
                               'input_shape') if spec.get(k))
    if extra:
      raise ValueError(f'{spec["path"]!r} is a tinyrobust run: its model '
                       f'comes from its config.json; drop {extra}.')
  else:
    name = spec.get('model')
    if not name or name not in keras_import.importable():
      raise ValueError(
          f'{kind} {spec["path"]!r} needs model= one of the importable zoo '
          f'models {keras_import.importable()}, got {name!r}.')
  return {**spec, 'kind': kind}


def load(spec: Any) -> TrainedModel:
  """Loads a trained model (a path, or a dict with `SPEC_KEYS`).

  Raises:
    ValueError: a bad spec (`check_spec`) or weights that do not fit the
      named zoo model (`keras_import`'s message).
  """
  spec = check_spec(spec)
  path = os.path.abspath(spec['path'])
  name = spec.get('name') or os.path.basename(path.rstrip(os.sep))
  source = {'kind': spec['kind'], 'path': path, 'sha256': sha256(path),
            'trained_elsewhere': spec['kind'] != 'workdir'}
  if spec['kind'] == 'workdir':
    model, variables, config = train_lib.load_trained(path)
    source.update(model=config.model.name,
                  kwargs=config_io.to_dict(config.model.get('kwargs')),
                  dataset=config.data.name,
                  data_options=config_io.to_dict(config.data.get('options')))
    return TrainedModel(name, model, variables, source)
  kwargs = config_io.to_dict(spec.get('kwargs')) or {}
  model, variables, effective = keras_import.load_with_kwargs(
      spec['model'], path, num_classes=spec.get('num_classes'),
      input_shape=spec.get('input_shape'), **kwargs)
  source.update(model=spec['model'], kwargs=fileio.to_jsonable(effective),
                dataset=None)
  return TrainedModel(name, model, variables, source)


def _outputs(m: TrainedModel) -> int:
  """K of the zoo module's `[B, K]` logits (its `num_classes` field)."""
  k = getattr(m.model, 'num_classes', None)
  if k is None:
    raise ValueError(f'Cannot tell the number of classes of {m.name!r}: '
                     f'{type(m.model).__name__} has no num_classes.')
  return int(k)


def as_run(m: TrainedModel, data: Mapping[str, Any], workdir: str,
           train: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Writes `m` into `workdir` as a tinyrobust run (`config.json` with
  `data`, the model's name, classes and kwargs; `best.ckpt` with its
  variables), so `train.load_trained(workdir)` and every stage that reads a
  run (--mode=attack/profile, a study's transfer stage) take it; returns
  the config written."""
  config = {'data': config_io.to_dict(data),
            'model': {'name': m.source['model'],
                      'num_classes': _outputs(m),
                      'kwargs': dict(m.source.get('kwargs') or {})},
            'train': dict(train or {}), 'trained_elsewhere': m.source}
  os.makedirs(workdir, exist_ok=True)
  fileio.save_pytree(os.path.join(workdir, train_lib.BEST), m.variables)
  fileio.write_json(os.path.join(workdir, 'config.json'), config)
  return config
