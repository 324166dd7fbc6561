"""Study entries that name a trained model instead of a training config:
a Keras .h5 file, a SavedModel directory and a tinyrobust run workdir,
evaluated and profiled on the task's test split, never trained; Table 1 and
the protocol record the file's sha256 and 'trained elsewhere'. Per task (KWS,
HAR, image on the shared data) the trained stage evaluates a SavedModel, a
keras-tcn .h5 and a .keras file as Keras itself scores them."""

import hashlib
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments.configs.study import parts
from tinyrobust import data as data_lib
from tinyrobust import fileio
from tinyrobust import models
from tinyrobust.nas import candidate
from tinyrobust.studies.robustness import config as study_config
from tinyrobust.studies.robustness import runner
from tinyrobust.studies.robustness import trained_stage

keras = pytest.importorskip('keras')


def _keras_mlp(path: str, savedmodel: str) -> np.ndarray:
  """A Keras Flatten-Dense(16, relu)-Dense(10) saved as legacy .h5 and
  exported as a SavedModel directory; returns Keras' own predictions on the
  digits test split."""
  keras.utils.set_random_seed(0)
  m = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                        keras.layers.Dense(16, activation='relu'),
                        keras.layers.Dense(10)])
  m.save(path)
  m.export(savedmodel, verbose=False)
  return m.predict(data_lib.load('digits', 'test').x, verbose=0).argmax(-1)


def _run_dir(path: str, data=None, shape=(8, 8, 1), classes=10) -> None:
  """A tinyrobust run written by hand (no training): a one-layer MLP on
  `data` (a config's data section; digits by default)."""
  model = models.get_model('mlp', classes, hidden=(4,))
  v = model.init(jax.random.key(1), jnp.zeros((1,) + tuple(shape)))
  os.makedirs(path)
  fileio.save_pytree(os.path.join(path, 'best.ckpt'), v)
  with open(os.path.join(path, 'config.json'), 'w') as f:
    json.dump({'data': data or {'name': 'digits', 'options': {'seed': 0}},
               'model': {'name': 'mlp', 'num_classes': classes,
                         'kwargs': {'hidden': [4]}}, 'train': {}}, f)


def _config(h5: str, run: str, saved: str):
  c = parts.study_base(autoattack=False)
  c.attack.attacks = ('fgsm',)
  c.attack.max_examples = 48
  c.hardware.measure = False
  c.study.bootstrap = 20
  digits = parts.data_config('digits', epochs=1, lr=1e-2, batch_size=64)
  c.tasks.image = parts.task('pixel/255', (0.0, 16.0))
  m = c.tasks.image.models
  m.keras_large = parts.entry(digits, 'large', 'mlp', raw=True)
  m.keras_large.trained = ml_collections.ConfigDict(
      {'path': h5, 'model': 'mlp', 'kwargs': {'hidden': (16,)}})
  m.saved_large = parts.entry(digits, 'large', 'mlp', raw=True)
  m.saved_large.trained = ml_collections.ConfigDict(
      {'path': saved, 'model': 'mlp', 'kwargs': {'hidden': (16,)}})
  m.run_tiny = parts.entry(digits, 'tiny', 'mlp', raw=True)
  m.run_tiny.trained = ml_collections.ConfigDict({'path': run})
  return c


def _never_train(cfg, workdir):
  raise AssertionError(f'trained {workdir}: a trained entry is never trained')


def test_study_evaluates_models_trained_elsewhere(tmp_path):
  h5, run = str(tmp_path / 'kws_like.h5'), str(tmp_path / 'run')
  saved = str(tmp_path / 'saved_model')
  keras_pred = _keras_mlp(h5, saved)
  _run_dir(run)
  wd = str(tmp_path / 'study')
  summary = runner.run_study(_config(h5, run, saved), wd,
                             train_fn=_never_train)
  t1 = {r['model']: r for r in summary['table1']}
  y = data_lib.load('digits', 'test').y
  with open(h5, 'rb') as f:
    assert t1['keras_large']['sha256'] == hashlib.sha256(f.read()).hexdigest()
  assert t1['keras_large']['trained'] == 'elsewhere (keras)'
  assert t1['run_tiny']['trained'] == 'elsewhere (workdir)'
  assert len(t1['run_tiny']['sha256']) == 64
  assert t1['keras_large']['architecture'] == 'mlp'
  # The imported model scores as Keras itself on the test split.
  assert t1['keras_large']['test_accuracy'] == pytest.approx(
      float(np.mean(keras_pred == y)))
  assert t1['keras_large']['params'] == 64 * 16 + 16 + 16 * 10 + 10
  # The same weights as a SavedModel directory: evaluated and attacked
  # alike; its sha256 is the directory's (files and relative paths).
  saved_row = t1['saved_large']
  assert saved_row['trained'] == 'elsewhere (savedmodel)'
  assert saved_row['test_accuracy'] == t1['keras_large']['test_accuracy']
  assert saved_row['params'] == t1['keras_large']['params']
  assert len(saved_row['sha256']) == 64 != len(
      {saved_row['sha256'], t1['keras_large']['sha256']})
  fgsm = {m: [p['robust_accuracy'] for p in fileio.read_json(os.path.join(
      wd, 'models', f'image__{m}', 'attack_results.json'))['attacks'][
          'fgsm']['per_eps']] for m in ('saved_large', 'keras_large')}
  assert fgsm['saved_large'] == fgsm['keras_large']
  report = open(os.path.join(wd, 'report.md')).read()
  assert 'trained elsewhere' in report and t1['keras_large']['sha256'] in report
  assert f'savedmodel {saved}' in report
  # Cached by sha256: a re-run attacks nothing again; a changed file is
  # evaluated anew.
  res_path = os.path.join(wd, 'models', 'image__keras_large',
                          'attack_results.json')
  stamp = os.path.getmtime(res_path)
  runner.run_study(_config(h5, run, saved), wd, train_fn=_never_train)
  assert os.path.getmtime(res_path) == stamp



# One trained-elsewhere entry per task on the task's real test split (the
# shared data), through the study's trained stage (`trained_stage.load`: the
# task-specific part; the attack and profile stages then read the job folder
# as any run, as the digits study above checks end to end): KWS a DS-CNN
# SavedModel (Keras 3 `export`, as MLPerf Tiny's reference), HAR a keras-tcn
# TCN in legacy .h5 (the study's HAR TCN), image a small MLP `.keras` on
# CIFAR-10 (the image task also runs end to end on digits above). A full
# study per task is too slow for CI (~100 s of CPU).
def _per_task(tmp_path):
  """`{task: (entry, keras_model, keras_layout_fn)}`, saved in 3 formats."""
  from tests.models import keras_originals as ko  # pylint: disable=g-import-not-at-top
  from tests.models import keras_tcn_like as ktl  # pylint: disable=g-import-not-at-top
  dscnn, _, _, _ = ko.dscnn()
  ko.randomize_bn(dscnn)
  dscnn.export(str(tmp_path / 'kws_ref_model'), verbose=False)
  tcn = ktl.model(t=550, c=6, classes=9, nb_filters=6, dilations=(1, 4),
                  use_batch_norm=True)
  tcn.save(str(tmp_path / 'har_tcn.h5'))
  keras.utils.set_random_seed(1)  # image: a small MLP (ResNet8 = 9 s CPU)
  mlp = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                          keras.layers.Dense(8, activation='relu'),
                          keras.layers.Dense(10, activation='softmax')])
  mlp.save(str(tmp_path / 'cifar_mlp.keras'))
  out = {}
  for task, train_cfg, kind, path, zoo, model in (
      ('kws', 'speech_commands_dscnn', 'tiny', 'kws_ref_model', 'dscnn',
       dscnn),
      ('har', 'auritus_tcn', 'tiny', 'har_tcn.h5', 'tcn', tcn),
      ('image', 'cifar10_resnet8', 'large', 'cifar_mlp.keras', 'mlp', mlp)):
    entry = parts.from_train(kind, train_cfg, 'quick')
    entry.trained = ml_collections.ConfigDict(
        {'path': str(tmp_path / path), 'model': zoo,
         'kwargs': {'hidden': (8,)} if zoo == 'mlp' else {}})
    out[task] = (entry, model, (lambda x: x[..., None]) if zoo == 'dscnn'
                 else (lambda x: x))
  return out


def test_trained_stage_on_each_task_with_keras_outputs(tmp_path,
                                                       shared_data_dir):
  del shared_data_dir  # $TINYROBUST_DATA_DIR holds the three tasks' data
  saved = _per_task(tmp_path)
  c = parts.study_base(autoattack=False)
  for task, (entry, _, _) in saved.items():
    c.tasks[task] = parts.task({'kws': 'mfcc', 'har': 'train-std',
                                'image': 'pixel/255'}[task], (0.0, 0.5))
    c.tasks[task].models.elsewhere = entry
    other = parts.entry(entry.config, 'large' if entry.kind == 'tiny' else
                        'tiny', 'mlp', hidden=(4,))
    c.tasks[task].models.here = other
  # Names, units, grids and the trained specs, before any work.
  study_config.check_study_config(runner.resolve_config(c), build=False)
  for task, (entry, keras_model, layout) in saved.items():
    wd = str(tmp_path / 'study' / task)
    final, model, variables, run_cfg = trained_stage.load(entry, wd, task)
    ds = candidate.load_split(run_cfg, 'test')  # the run the stages read
    ref = keras_model.predict(layout(ds.x), batch_size=500, verbose=0)
    assert final['test_count'] == len(ds.y) and final['dataset'] == (
        entry.config.data.name)
    assert final['test_accuracy'] == pytest.approx(
        float(np.mean(ref.argmax(-1) == ds.y)))
    out = jax.nn.softmax(model.apply(variables, ds.x[:64], train=False))
    np.testing.assert_allclose(np.asarray(out), ref[:64], atol=1e-4)
    src = final['source']
    assert src['kind'] == ('savedmodel' if task == 'kws' else 'keras')
    assert final['trained_elsewhere'] and src['model'] == (
        entry.trained.model)
    if task != 'kws':  # a file: its own bytes' sha256
      with open(entry.trained.path, 'rb') as f:
        assert src['sha256'] == hashlib.sha256(f.read()).hexdigest()
    assert len(src['sha256']) == 64
    assert fileio.read_json(os.path.join(wd, 'config.json'))['data'] == (
        entry.config.data.to_dict())
