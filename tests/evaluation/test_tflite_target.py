"""A bare .tflite as the attacked target (no JAX model), and the routes'
worst case in `evaluate_deployed`: the same Square search on the same file,
seed and examples; the worst case never above any route, per example."""

import hashlib
import importlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust import data as data_lib
from tinyrobust import hardware
from tinyrobust import fileio
from tinyrobust import models
from tinyrobust import modes
from tinyrobust.evaluation import deployed
from tinyrobust.evaluation import routes
from tinyrobust.evaluation import tflite_target

pytest.importorskip('ai_edge_litert')

SETTINGS = dict(eps_grid=[0.0, 0.15], batch_size=8, seed=3, max_examples=8,
                norm='linf', options={'square': {'queries': 4}})


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  """A linear zoo model on digits fitted in closed form (least squares on
  +-4 targets, ~0.96 test accuracy), and its int8 flatbuffer on disk,
  exported as `evaluate_deployed` exports it."""
  tr, te = data_lib.load('digits', 'train'), data_lib.load('digits', 'test')
  a = np.c_[tr.x.reshape(len(tr.x), -1), np.ones(len(tr.x))]
  w = np.linalg.lstsq(a, 8.0 * np.eye(10)[tr.y] - 4.0, rcond=None)[0]
  model = models.get_model('mlp', 10, hidden=(), input_shape=(8, 8, 1))
  v = jax.tree.map(np.asarray, model.init(jax.random.key(0),
                                          jnp.zeros((1, 8, 8, 1))))
  v['params']['Dense_0'] = {'kernel': w[:-1].astype(np.float32),
                            'bias': w[-1].astype(np.float32)}
  flat = hardware.export_tflite(model, v, (8, 8, 1), quantize='int8',
                                representative_data=hardware.representative(
                                    tr.x))
  path = tmp_path_factory.mktemp('tflite') / 'digits_linear.tflite'
  path.write_bytes(flat)
  return model, v, tr, te, str(path)


def _per_example(res, route):
  return np.asarray(res['worst_case']['examples']['routes'][route])


def _check_worst_case(wc):
  worst = np.asarray(wc['examples']['worst'])
  for r, rob in wc['examples']['routes'].items():
    assert (worst <= np.asarray(rob)).all(), r  # per example
  for row in wc['per_eps']:
    assert row['robust_accuracy'] <= min(row['by_route'].values())


def test_tflite_only_square_equals_the_deployed_paths_square(exported):
  model, v, tr, te, path = exported
  res = tflite_target.evaluate_tflite(
      path, te, attacks=['square', 'fgsm'], surrogate=(model.apply, v),
      **SETTINGS)
  dep = deployed.evaluate_deployed(
      model, v, te, x_train=tr.x, attacks=['square'],
      precisions=('float32', 'int8-litert'), tflm_samples=0, **SETTINGS)
  # (export_tflite is deterministic: evaluate_deployed's in-memory export is
  # the file's bytes.) The input quantisation is read from the file: digits
  # in [0, 1] -> scale 1/255, zero point -128.
  info = res['target']
  with open(path, 'rb') as f:
    assert info['sha256'] == hashlib.sha256(f.read()).hexdigest()
  assert info['input_dtype'] == 'int8' and info['input_zero_point'] == -128
  assert info['input_scale'] == pytest.approx(1 / 255, rel=1e-3)
  lite = dep['evaluations']['int8-litert->int8-litert']['square']
  assert res['clean_accuracy'] == lite['clean_accuracy']
  assert res['routes']['square@litert']['per_eps'] == [
      {k: p[k] for k in res['routes']['square@litert']['per_eps'][0]}
      for p in lite['per_eps']]
  np.testing.assert_array_equal(_per_example(res, 'square@litert'),
                                _per_example(dep, 'square@int8-litert'))
  # Square found something at eps > 0 (else equality would be vacuous).
  assert lite['per_eps'][1]['robust_correct'] < lite['clean_correct']
  assert set(res['worst_case']['routes']) == {'square@litert',
                                              'fgsm@surrogate'}
  assert set(dep['worst_case']['routes']) == {'square@float32',
                                              'square@int8-litert'}
  for r in (res, dep):
    _check_worst_case(r['worst_case'])


def test_worst_case_is_the_per_example_minimum():
  """Two routes that break different examples: the worst case breaks both
  sets (below either route), and each route's own number is kept."""
  y = np.array([0, 1, 1, 0])
  clean = np.eye(2)[[0, 1, 1, 1]]  # example 3 is clean-wrong
  adv_a = np.eye(2)[[[0, 1, 1, 1], [1, 1, 1, 1]]]  # breaks 0 at eps 1
  adv_b = np.eye(2)[[[0, 1, 1, 1], [0, 0, 1, 1]]]  # breaks 1 at eps 1
  o = {'a': routes.outcomes(y, clean, adv_a), 'b': routes.outcomes(
      y, clean, adv_b)}
  wc = routes.worst_case(o, [0.0, 1.0])
  assert wc['clean_accuracy'] == 0.75
  assert [r['robust_accuracy'] for r in wc['per_eps']] == [0.75, 0.25]
  assert wc['per_eps'][1]['by_route'] == {'a': 0.5, 'b': 0.5}
  assert wc['per_eps'][1]['only_route'] == {'a': 1, 'b': 1}
  _check_worst_case(wc)
  with pytest.raises(ValueError, match="'b'"):
    routes.worst_case({'a': o['a'], 'b': routes.outcomes(
        y[:3], clean[:3], adv_b[:, :3])}, [0.0, 1.0])


def test_attack_mode_on_a_bare_flatbuffer(exported, tmp_path):
  """--mode=attack with config.target.tflite: no trained run, the data
  section of the named training config, tflite_results.json written; FGSM
  transferred from a surrogate run workdir (the model the file was exported
  from, saved as a run) equals FGSM from the same model in memory."""
  model, v, _, te, path = exported
  run = tmp_path / 'linear_run'
  run.mkdir()
  fileio.save_pytree(str(run / 'best.ckpt'), v)
  fileio.write_json(str(run / 'config.json'), {
      'data': {'name': 'digits', 'options': {}}, 'train': {},
      'model': {'name': 'mlp', 'num_classes': 10,
                'kwargs': {'hidden': [], 'input_shape': [8, 8, 1]}}})
  cfg = importlib.import_module(
      'experiments.configs.attack.tflite').get_config('train=digits_cnn')
  cfg.target.tflite = path
  cfg.target.surrogate = str(run)
  cfg.attack.attacks = ('square', 'fgsm')
  cfg.attack.eps_grid = (0.0, 0.15)
  cfg.attack.max_examples = 8
  cfg.attack.batch_size = 8
  cfg.attack.options.square.queries = 2
  wd = str(tmp_path / 'tflite_attack')
  res = modes.run('attack', cfg, wd)
  saved = fileio.read_json(os.path.join(wd, 'tflite_results.json'))
  assert saved['routes'].keys() == {'square@litert', 'fgsm@linear_run'}
  assert saved['surrogate']['kind'] == 'workdir'
  assert not saved['surrogate']['trained_elsewhere']
  direct = tflite_target.evaluate_tflite(
      path, te, attacks=['fgsm'], surrogate=(model.apply, v),
      eps_grid=saved['eps_grid'], batch_size=8, seed=0, max_examples=8)
  np.testing.assert_array_equal(_per_example(res, 'fgsm@linear_run'),
                                _per_example(direct, 'fgsm@surrogate'))
  assert saved['num_examples'] == 8 and saved['data']['name'] == 'digits'
  assert saved['worst_case']['per_eps'] == res['worst_case']['per_eps']
  assert saved['target']['sha256'] == res['target']['sha256']
