"""The study's 'train' stage for a model trained elsewhere (`.trained`).

A study entry may name an already trained model instead of a training
config: a Keras `.h5`/`.keras` file, a SavedModel directory or a tinyrobust
run workdir (`trained_elsewhere`). It is never trained: it is loaded, written
into its job folder as a tinyrobust run (`config.json` with the entry's data
section, `best.ckpt`: so the attack, profile and transfer stages read it as
any other run), and its clean accuracy is measured on the task's test split
into `final_metrics.json`, which also records its source: kind, path,
sha256 and `trained_elsewhere` (Table 1 and the protocol show them).

Cached by sha256: a re-run with the same file reuses everything; a changed
file (another sha256) invalidates the job's attack and profile results.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
import numpy as np

from tinyrobust import config_io
from tinyrobust import fileio
from tinyrobust import train
from tinyrobust import trained_elsewhere
from tinyrobust.checkpoints import RESULT_FILES
from tinyrobust.nas import candidate

STALE = RESULT_FILES + ('attack_examples.npz',)


def _accuracy(model, variables, x: np.ndarray, y: np.ndarray,
              batch_size: int = 256) -> float:
  fn = jax.jit(lambda v, a: model.apply(v, a, train=False))
  pred = np.concatenate([np.asarray(fn(variables, x[i:i + batch_size]))
                         .argmax(-1) for i in range(0, len(x), batch_size)])
  return float(np.mean(pred == y))


def load(entry, wd: str, label: str = ''
         ) -> tuple[dict[str, Any], Any, Any, ml_collections.ConfigDict]:
  """`(final, model, variables, run_config)` of a trained-elsewhere entry,
  as `ModelJob._train` returns them for a model trained here.

  Raises:
    ValueError: the model does not take the split's inputs (naming both
      shapes) or outputs another number of classes than the data has.
  """
  spec = trained_elsewhere.check_spec(entry.trained)
  final_path = os.path.join(wd, train.FINAL)
  digest = trained_elsewhere.sha256(spec['path'])
  if os.path.exists(final_path) and os.path.exists(
      os.path.join(wd, 'config.json')):
    final = fileio.read_json(final_path)
    if (final.get('source') or {}).get('sha256') == digest:
      model, variables, run_cfg = train.load_trained(wd)
      return final, model, variables, run_cfg
  for name in STALE + (train.FINAL,):
    if os.path.exists(os.path.join(wd, name)):
      os.remove(os.path.join(wd, name))
  data = config_io.to_dict(entry.config.data)
  ds = candidate.load_split(ml_collections.ConfigDict({'data': data}),
                            'test')
  if spec['kind'] != 'workdir' and not spec.get('input_shape'):
    spec['input_shape'] = tuple(ds.x.shape[1:])  # built on the task's data
  m = trained_elsewhere.load(spec)
  where = f'study model {label or m.name!r} ({spec["path"]})'
  try:
    out = jax.eval_shape(m.apply_fn, m.variables, ds.x[:1])
  except Exception as err:  # pylint: disable=broad-except
    raise ValueError(f'{where} does not take {data["name"]!r} inputs of '
                     f'shape {list(ds.x.shape[1:])}: {type(err).__name__}: '
                     f'{str(err)[:300]}') from None
  if ds.num_classes is not None and out.shape[-1] != ds.num_classes:
    raise ValueError(f'{where} outputs {out.shape[-1]} classes but '
                     f'{data["name"]!r} has {ds.num_classes}.')
  trained_elsewhere.as_run(m, data, wd)
  final = {'test_accuracy': _accuracy(m.model, m.variables, ds.x, ds.y),
           'test_count': int(len(ds.y)), 'dataset': data['name'],
           'protocol': (ds.meta or {}).get('protocol', ''),
           'trained_elsewhere': True,  # not by this study (any kind)
           'source': m.source}
  fileio.write_json(final_path, final)
  model, variables, run_cfg = train.load_trained(wd)
  return final, model, variables, run_cfg
