"""Study entries that name a trained model instead of a training config:
a Keras file and a tinyrobust run workdir, evaluated and profiled on the
task's test split, never trained; Table 1 and the protocol record the file's
sha256 and 'trained elsewhere'."""

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
from tinyrobust import io
from tinyrobust import models
from tinyrobust.studies.robustness import runner

keras = pytest.importorskip('keras')


def _keras_mlp(path: str) -> np.ndarray:
  """A Keras Flatten-Dense(16, relu)-Dense(10) saved as legacy .h5; returns
  Keras' own predictions on the digits test split."""
  keras.utils.set_random_seed(0)
  m = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                        keras.layers.Dense(16, activation='relu'),
                        keras.layers.Dense(10)])
  m.save(path)
  return m.predict(data_lib.load('digits', 'test').x, verbose=0).argmax(-1)


def _run_dir(path: str) -> None:
  """A tinyrobust run written by hand (no training): a one-layer MLP."""
  model = models.get_model('mlp', 10, hidden=(4,))
  v = model.init(jax.random.key(1), jnp.zeros((1, 8, 8, 1)))
  os.makedirs(path)
  io.save_pytree(os.path.join(path, 'best.ckpt'), v)
  with open(os.path.join(path, 'config.json'), 'w') as f:
    json.dump({'data': {'name': 'digits', 'options': {'seed': 0}},
               'model': {'name': 'mlp', 'num_classes': 10,
                         'kwargs': {'hidden': [4]}}, 'train': {}}, f)


def _config(h5: str, run: str):
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
  m.run_tiny = parts.entry(digits, 'tiny', 'mlp', raw=True)
  m.run_tiny.trained = ml_collections.ConfigDict({'path': run})
  return c


def _never_train(cfg, workdir):
  raise AssertionError(f'trained {workdir}: a trained entry is never trained')


def test_study_evaluates_models_trained_elsewhere(tmp_path):
  h5, run = str(tmp_path / 'kws_like.h5'), str(tmp_path / 'run')
  keras_pred = _keras_mlp(h5)
  _run_dir(run)
  wd = str(tmp_path / 'study')
  summary = runner.run_study(_config(h5, run), wd, train_fn=_never_train)
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
  report = open(os.path.join(wd, 'report.md')).read()
  assert 'trained elsewhere' in report and t1['keras_large']['sha256'] in report
  # Cached by sha256: a re-run attacks nothing again; a changed file is
  # evaluated anew.
  res_path = os.path.join(wd, 'models', 'image__keras_large',
                          'attack_results.json')
  stamp = os.path.getmtime(res_path)
  runner.run_study(_config(h5, run), wd, train_fn=_never_train)
  assert os.path.getmtime(res_path) == stamp
