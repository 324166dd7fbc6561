"""Extension points: an attack registered once reaches every consumer, and
the search's hardware figures are the profile's."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tinyrobust import attacks
from tinyrobust import data as data_lib
from tinyrobust import hardware
from tinyrobust import models
from tinyrobust import modes
from tinyrobust import train
from tinyrobust.nas import costs
from tinyrobust.nas import journal as journal_lib
from tinyrobust.nas import search


def make_uniform_noise(apply_fn, *, norm='linf', clip=None):
  """Uniform noise in the L-inf ball: the simplest black-box 'attack'."""
  del apply_fn

  def kernel(variables, x, y, key, eps):
    del variables, y
    eps = jnp.reshape(jnp.asarray(eps, x.dtype),
                      jnp.shape(eps) + (1,) * (x.ndim - jnp.ndim(eps)))
    x_adv = x + jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * eps
    return x_adv if clip is None else jnp.clip(x_adv, clip[0], clip[1])

  return attacks.Attack('uniform_noise', {'norm': norm, 'clip': clip}, kernel)


@pytest.fixture
def noise_attack():
  attacks.register_attack('uniform_noise', make_uniform_noise)
  yield 'uniform_noise'
  attacks.unregister_attack('uniform_noise')


def test_registered_attack_reaches_attack_mode(tmp_path, monkeypatch,
                                               noise_attack):
  model = models.get_model('mlp', num_classes=10, hidden=(16,))
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  config = ml_collections.ConfigDict({
      'seed': 0, 'data': {'name': 'digits', 'options': {'seed': 0}},
      'model': {'name': 'mlp'},
      'attack': {'attacks': ['fgsm', noise_attack], 'eps_grid': [0.0, 0.3],
                 'batch_size': 64, 'max_examples': 60}})
  monkeypatch.setattr(train, 'load_trained',
                      lambda workdir: (model, variables, config))
  res = modes.attack(None, str(tmp_path))
  rows = {(r['attack'], r['eps']): r for r in res['rows']}
  assert (noise_attack, 0.3) in rows
  # eps=0 is the clean model; the noise kernel got the dataset's clip.
  assert rows[(noise_attack, 0.0)]['robust_correct'] == res['clean_correct']
  assert res['attacks'][noise_attack]['config']['clip'] == [0.0, 1.0]
  # Its counts are what the kernel gives when applied by hand.
  ds = data_lib.load('digits', 'test', seed=0)
  keep = np.sort(np.random.default_rng(0).permutation(len(ds.x))[:60])
  assert res['denominator'] == 60
  apply_fn = functools.partial(model.apply, train=False)
  clean = np.asarray(apply_fn(variables, ds.x[keep])).argmax(1)
  assert res['clean_correct'] == int((clean == ds.y[keep]).sum())


def _search_config():
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = ml_collections.ConfigDict({'name': 'basic_motions',
                                      'options': {'seed': 0}})
  c.model = ml_collections.ConfigDict({'name': 'mlp', 'kwargs': {}})
  c.train = ml_collections.ConfigDict({
      'epochs': 1, 'batch_size': 16, 'learning_rate': 3e-3,
      'progress_bar': False})
  c.search = ml_collections.ConfigDict({
      'space': 'mlp', 'board': '', 'flash_max_bytes': 400e3,
      'sram_max_bytes': 64e3, 'flash_proxy': 'param_bytes',
      'sram_gate': 'study', 'precision': 'float32', 'num_trials': 1,
      'n_initial_points': 1, 'trial_epochs': 1, 'final_retrain': False})
  return c


def test_registered_attack_reaches_search_metrics(tmp_path, noise_attack):
  c = _search_config()
  c.attack = ml_collections.ConfigDict({'attacks': ['fgsm', noise_attack],
                                        'eps_grid': [0.2]})
  search.run_search(c, str(tmp_path))
  (rec,) = journal_lib.Journal(str(tmp_path)).replay().results
  assert rec['status'] == 'ok', rec.get('error')
  m = rec['metrics']
  for key in (f'val_{noise_attack}_consistency',
              f'val_{noise_attack}_robust_accuracy',
              'val_fgsm_consistency'):
    assert 0.0 <= m[key] <= 1.0
  assert rec['timings'][f'{noise_attack}_s'] > 0
  # The objective's adversarial term is still FGSM's consistency.
  assert rec['terms']['adversarial_error'] == pytest.approx(
      1 - m['val_fgsm_consistency'])


def test_search_costs_equal_profile():
  """One costing path: flash and TFLM arena of the search == profile's."""
  ds = data_lib.load('basic_motions', 'train', seed=0)
  model = models.get_model('mlp', 4, hidden=(12,))
  shape = ds.x.shape[1:]
  c = costs.candidate_costs(
      model, shape, seed=3, sram_gate='tflm', flash_proxy='tflite',
      precision='int8', representative_data=hardware.representative(ds.x))
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(3), jnp.zeros((1,) + shape))
  p = hardware.profile(model, variables, shape,
                       representative_data=hardware.representative(ds.x),
                       boards=['stm32l476rg'])
  assert c['flash_bytes'] == p['int8']['flash']
  assert c['sram_tflm'] == p['int8']['tflm_arena']
  assert c['sram_liveness'] == p['int8']['sram_liveness']
