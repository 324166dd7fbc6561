"""Boards, budget checks, and the end-to-end `profile` / `--mode=profile`."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tinyrobust import hardware
from tinyrobust import fileio
from tinyrobust import models
from tinyrobust import modes

KB = 1024


def test_known_boards():
  assert hardware.list_boards() == ['stm32f446re', 'stm32f746zg',
                                    'stm32l476rg']
  b = hardware.get_board('stm32f746zg')
  assert (b.sram, b.flash, b.clock_hz) == (320 * KB, 1024 * KB, 216e6)
  assert hardware.get_board('STM32F446RE').sram == 128 * KB
  assert hardware.get_board('stm32l476rg').flash == 1024 * KB


def test_bad_boards():
  with pytest.raises(ValueError, match='stm32f746zg'):
    hardware.get_board('esp32')
  with pytest.raises(ValueError, match='misses'):
    hardware.get_board({'name': 'x', 'sram': 1})
  with pytest.raises(ValueError, match='sram'):
    hardware.get_board({'name': 'x', 'sram': -1, 'flash': 1, 'clock_hz': 1})


def _fake_profile(sram, flash, macs=1_000_000):
  sec = {'flash': flash, 'sram_liveness': sram, 'tflm_arena': sram}
  return {'macs': macs, 'float32': dict(sec), 'int8': dict(sec)}


def test_fits_reports_excess():
  ok = hardware.fits(_fake_profile(100 * KB, 200 * KB), 'stm32f446re')
  assert ok['fits'] and ok['exceeded'] == []
  bad = hardware.fits(_fake_profile(130 * KB, 600 * KB), 'stm32f446re')
  assert not bad['fits']
  assert bad['exceeded'] == ['sram', 'flash']
  assert bad['sram']['excess'] == 2 * KB
  assert bad['flash']['excess'] == 88 * KB
  custom = {'name': 'tiny', 'sram': 64 * KB, 'flash': 256 * KB,
            'clock_hz': 100e6, 'macs_per_cycle': {'int8': 0.5}}
  r = hardware.fits(_fake_profile(65 * KB, 10 * KB), custom)
  assert r['exceeded'] == ['sram'] and r['sram']['excess'] == KB
  assert r['latency_s_estimate'] == pytest.approx(1e6 / (0.5 * 100e6))
  with pytest.raises(ValueError, match='precision'):
    hardware.fits(_fake_profile(1, 1), 'stm32f446re', precision='int4')
  with pytest.raises(ValueError, match='section'):
    hardware.fits({'macs': 1}, 'stm32f446re')


@pytest.fixture(scope='module')
def small_cnn():
  model = models.get_model('cnn', 10, features=(4, 8))
  v = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  return model, v


def test_profile_record(small_cnn):
  model, v = small_cnn
  x = np.random.default_rng(0).uniform(0, 1, (32, 8, 8, 1)).astype(np.float32)
  p = hardware.profile(model, v, (8, 8, 1), representative_data=x,
                       boards=['stm32f446re'])
  assert p['params'] == 4 * 9 + 4 * 8 * 9 + 8 * 10 + 10 + 2 * (4 + 8)
  assert p['macs'] > 0 and p['flops'] > 2 * p['macs']
  for prec in ('float32', 'int8'):
    s = p[prec]
    for k in ('flash', 'sram_study', 'sram_liveness', 'tflm_arena',
              'tflm_arena_head', 'tflm_arena_tail'):
      assert s[k] > 0, (prec, k)
    assert s['tflm_arena'] == s['tflm_arena_head'] + s['tflm_arena_tail']
    assert abs(s['sram_liveness_error']) <= 0.15
    assert s['sram_study_error'] < 0
  assert p['float32']['agreement']['max_abs_diff'] <= 1e-4
  assert p['float32']['flash'] > p['int8']['flash']
  assert p['boards']['stm32f446re']['int8']['fits']
  json.dumps(fileio.to_jsonable(p))  # serialisable as profile.json


def test_profile_mode(tmp_path, small_cnn):
  model, v = small_cnn
  del model
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = {'name': 'digits', 'options': {'seed': 0}}
  c.model = {'name': 'cnn', 'num_classes': 10,
             'kwargs': {'features': [4, 8]}}
  c.train = {'epochs': 1, 'batch_size': 32}
  c.hardware = {'measure': False, 'boards': ['stm32l476rg']}
  fileio.write_json(str(tmp_path / 'config.json'), c.to_dict())
  fileio.save_pytree(str(tmp_path / 'best.ckpt'), v)
  p = modes.profile(None, str(tmp_path))
  saved = fileio.read_json(str(tmp_path / 'profile.json'))
  assert saved['macs'] == p['macs'] > 0
  assert 'tflm_arena' not in saved['int8']
  assert set(saved['boards']) == {'stm32l476rg'}
  assert os.path.isfile(tmp_path / 'profile.json')
  c.hardware = {'bogus': 1}
  with pytest.raises(ValueError, match='bogus'):
    modes.profile(c, str(tmp_path))
