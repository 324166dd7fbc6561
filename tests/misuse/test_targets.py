"""Misuse sweep, targets: a bare .tflite as the attacked target
(`evaluation.tflite_target`) and models trained elsewhere
(`trained_elsewhere`: surrogates, study entries). Every bad value is named
with what is allowed, before any attack runs."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.misuse import sweep

Case, pkg = sweep.Case, sweep.pkg


def _tflite(ctx) -> str:
  """The misuse MLP exported to an int8 flatbuffer file (cached)."""
  if 'targets_tflite' not in ctx.cache:
    hardware = pkg('tinyrobust.hardware')
    model, v, _ = ctx.mlp()
    x = ctx.xy()[0]
    flat = hardware.export_tflite(model, v, (8, 8, 1), quantize='int8',
                                  representative_data=x)
    path = ctx.path('mlp') + '.tflite'
    with open(path, 'wb') as f:
      f.write(flat)
    ctx.cache['targets_tflite'] = path
  return ctx.cache['targets_tflite']


def _evaluate(ctx, path=None, dataset=None, **kw):
  tflite_target = pkg('tinyrobust.evaluation.tflite_target')
  opts = dict(eps_grid=[0.0, 0.1], attacks=['square'], batch_size=64,
              options={'square': {'queries': 2}})
  opts.update(kw)
  return tflite_target.evaluate_tflite(
      _tflite(ctx) if path is None else path,
      ctx.xy() if dataset is None else dataset, **opts)


def _not_flatbuffer(ctx):
  path = ctx.path('weights') + '.tflite'
  with open(path, 'wb') as f:
    f.write(b'PK\x03\x04 a zip archive, e.g. a .keras file')
  return _evaluate(ctx, path)


def _shape_mismatch(ctx):
  x, y = ctx.xy()
  return _evaluate(ctx, dataset=(x.reshape(len(x), 64), y))


def _labels(ctx):
  x, y = ctx.xy()
  return _evaluate(ctx, dataset=(x, np.full_like(y, 12)))


def _other_task_surrogate(ctx):
  """A run of another dataset: the misuse MLP saved as a tinyrobust run
  whose config.json says basic_motions (written by hand: no training)."""
  io = pkg('tinyrobust.fileio')
  d = ctx.path('other_task_run')
  os.makedirs(d)
  with open(os.path.join(d, 'config.json'), 'w') as f:
    json.dump({'data': {'name': 'basic_motions', 'options': {}},
               'model': {'name': 'mlp', 'num_classes': 10,
                         'kwargs': {'hidden': [16]}}, 'train': {}}, f)
  io.save_pytree(os.path.join(d, 'best.ckpt'), ctx.mlp()[1])
  return _evaluate(ctx, attacks=['square', 'fgsm'], surrogate=d,
                   dataset_name='digits')


def _three_class_surrogate(ctx):
  models = pkg('tinyrobust.models')
  m = models.get_model('mlp', 3, hidden=(4,))
  v = m.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  return _evaluate(ctx, attacks=['square', 'fgsm'], surrogate=(m.apply, v))


def _empty_h5(ctx):
  path = ctx.path('model') + '.h5'
  open(path, 'wb').close()
  return _evaluate(ctx, attacks=['square', 'fgsm'], surrogate=path)


def _unknown_zoo_model(ctx):
  path = ctx.path('model') + '.keras'
  open(path, 'wb').close()
  return _load({'path': path, 'model': 'resnet9'})


def _json_file(ctx):
  path = ctx.path('config') + '.json'
  with open(path, 'w') as f:
    f.write('{}')
  return _load({'path': path})


def _load(spec):
  return pkg('tinyrobust.trained_elsewhere').load(spec)


def _target_section(section):
  return pkg('tinyrobust.evaluation.tflite_target').surrogate_spec(section)


def _study_entry_missing_file(ctx):
  """A study whose large model names a Keras file that is not there: the
  config check (before any training) names the entry and the path."""
  parts = pkg('experiments.configs.study.parts')
  study_config = pkg('tinyrobust.studies.robustness.config')
  ml_collections = pkg('ml_collections')
  c = parts.study_base(autoattack=False)
  digits = parts.data_config('digits', epochs=1, lr=1e-2, batch_size=64)
  c.tasks.image = parts.task('pixel/255', (0.0, 8.0))
  m = c.tasks.image.models
  m.tiny = parts.entry(digits, 'tiny', 'mlp', raw=True, hidden=(4,))
  m.large = parts.entry(digits, 'large', 'mlp', raw=True)
  m.large.trained = ml_collections.ConfigDict(
      {'path': '/no/such/large.h5', 'model': 'mlp'})
  return study_config.check_study_config(c, build=False)


def _tcn_weights_only(ctx):
  """A keras-tcn TCN (one block, 2 filters, kernel 2) + Dense(3) as a
  weights-only HDF5 file written with h5py (no Keras), imported without
  the options its weights cannot record."""
  import h5py  # pylint: disable=g-import-not-at-top
  path = ctx.path('har_tcn_weights') + '.h5'
  arrays = {'tcn': {f'tcn/residual_block_0/conv1D_{k}/{w}:0': np.full(
      (2, 2, 2) if w == 'kernel' else (2,), 0.1, np.float32)
                    for k in (0, 1) for w in ('kernel', 'bias')},
            'dense': {'dense/kernel:0': np.ones((2, 3), np.float32),
                      'dense/bias:0': np.zeros(3, np.float32)}}
  with h5py.File(path, 'w') as f:
    f.attrs['layer_names'] = [n.encode() for n in arrays]
    for layer, weights in arrays.items():
      g = f.create_group(layer)
      g.attrs['weight_names'] = [n.encode() for n in weights]
      for n, a in weights.items():
        g.create_dataset(n, data=a)
  return _load({'path': path, 'model': 'tcn', 'kwargs': {'dilations': (1,)}})


def _corrupt_keras_metadata(ctx):
  """A SavedModel (one variable) whose keras_metadata.pb is not a proto."""
  tf = pkg('tinyrobust.tf_setup').import_tf()
  path = ctx.path('kws_ref_model')
  root = tf.Module()
  root.w = tf.Variable(np.zeros((64, 10), np.float32), name='dense/kernel')
  tf.saved_model.save(root, path)
  with open(os.path.join(path, 'keras_metadata.pb'), 'wb') as f:
    f.write(b'\xff\xff\xff\xff not a SavedMetadata proto')
  return _load({'path': path, 'model': 'mlp'})


def _study_entry_other_classes(ctx):
  """A study entry naming a run of 3 classes evaluated on digits (10)."""
  io = pkg('tinyrobust.fileio')
  models = pkg('tinyrobust.models')
  parts = pkg('experiments.configs.study.parts')
  trained_stage = pkg('tinyrobust.studies.robustness.trained_stage')
  ml_collections = pkg('ml_collections')
  run = ctx.path('three_class_run')
  os.makedirs(run)
  m = models.get_model('mlp', 3, hidden=(4,))
  io.save_pytree(os.path.join(run, 'best.ckpt'), m.init(
      jax.random.key(0), jnp.zeros((1, 8, 8, 1))))
  with open(os.path.join(run, 'config.json'), 'w') as f:
    json.dump({'data': {'name': 'digits', 'options': {'seed': 0}},
               'model': {'name': 'mlp', 'num_classes': 3,
                         'kwargs': {'hidden': [4]}}, 'train': {}}, f)
  entry = parts.entry(parts.data_config('digits', epochs=1, lr=1e-2,
                                        batch_size=64), 'tiny', 'mlp')
  entry.trained = ml_collections.ConfigDict({'path': run})
  return trained_stage.load(entry, ctx.path('study_job'), 'three')


def _cases() -> list[Case]:
  g = 'targets'
  return [
      Case('tflite_missing', g, lambda c: _evaluate(
          c, '/no/such/model.tflite'), ('/no/such/model.tflite', 'TFL3')),
      Case('tflite_directory', g, lambda c: _evaluate(c, c.root),
           ('directory', 'TFL3')),
      Case('tflite_not_a_flatbuffer', g, _not_flatbuffer,
           ('weights', 'not a TFLite flatbuffer', 'TFL3')),
      Case('tflite_input_shape_vs_data', g, _shape_mismatch,
           ('[64]', '[8, 8, 1]')),
      Case('tflite_labels_beyond_classes', g, _labels, ('12', '10')),
      Case('tflite_gradient_attack_without_surrogate', g, lambda c: _evaluate(
          c, attacks=['square', 'pgd']), ("'pgd'", 'surrogate')),
      Case('tflite_attacks_unknown', g, lambda c: _evaluate(
          c, attacks=['square', 'cw']), ("'cw'",)),
      Case('surrogate_of_another_task', g, _other_task_surrogate,
           ("'basic_motions'", "'digits'")),
      Case('surrogate_three_classes', g, _three_class_surrogate,
           ('[1, 3]', '10 classes')),
      Case('surrogate_keras_without_model', g, _empty_h5,
           ('model.h5', 'model=')),
      Case('trained_model_missing_file', g, lambda c: _load(
          {'path': '/no/such/kws.h5', 'model': 'dscnn'}),
           ('/no/such/kws.h5', 'does not exist', 'SavedModel')),
      Case('trained_model_not_keras_suffix', g, lambda c: _load(
          {'path': _tflite(c), 'model': 'mlp'}), ('.tflite', '.keras')),
      Case('trained_model_json_file', g, _json_file, ('config.json', '.h5')),
      Case('trained_model_unknown_zoo_model', g, _unknown_zoo_model,
           ("'resnet9'", 'dscnn')),
      Case('trained_model_unknown_key', g, lambda c: _load(
          {'path': _tflite(c), 'modle': 'mlp'}), ("'modle'",)),
      Case('study_entry_missing_file', g, _study_entry_missing_file,
           ('tasks.image.models.large.trained', '/no/such/large.h5',
            'does not exist')),
      Case('keras_tcn_weights_without_settings', g, _tcn_weights_only,
           ("'padding'", "'use_skip_connections'", "'causal'",
            'har_tcn_weights')),
      Case('savedmodel_corrupt_keras_metadata', g, _corrupt_keras_metadata,
           ('kws_ref_model', 'keras_metadata.pb', 'SavedMetadata')),
      Case('study_entry_outputs_other_classes', g,
           _study_entry_other_classes,
           ("'three'", 'outputs 3 classes', "'digits' has 10")),
      Case('target_section_unknown_field', g, lambda c: _target_section(
          {'tflite': 'm.tflite', 'surogate': '/runs/x'}), ("'surogate'",)),
  ]


CASES = _cases()


@pytest.mark.parametrize('case', CASES, ids=sweep.ids(CASES))
def test_targets_misuse(case, misuse_ctx):
  sweep.check(case, misuse_ctx)
