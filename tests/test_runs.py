"""tinyrobust.runs: a trained run -> threat -> data -> evaluation -> records
(`--mode=attack`); `--mode=profile` is tested in
tests/hardware/test_boards_profile.py."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from tinyrobust import fileio as io_lib
from tinyrobust import models
from tinyrobust import results as results_lib
from tinyrobust import runs
from tinyrobust import train


def test_attack_a_trained_run(tmp_path, monkeypatch):
  """A trained-run stand-in: real model, real digits test split."""
  model = models.get_model('mlp', num_classes=10, hidden=(16,))
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  config = ml_collections.ConfigDict({
      'seed': 1,
      'data': {'name': 'digits', 'options': {'seed': 0}},
      'model': {'name': 'mlp'},
      'attack': {'attacks': ['fgsm', 'pgd'], 'eps_grid': [0.0, 0.1],
                 'pgd_steps': 2, 'batch_size': 32, 'max_examples': 50},
  })
  monkeypatch.setattr(train, 'load_trained',
                      lambda workdir: (model, variables, config))
  res = runs.attack(None, str(tmp_path))
  assert res['denominator'] == 50 and res['clip'] == [0.0, 1.0]
  assert os.path.exists(tmp_path / 'attack_results.json')
  assert os.path.exists(tmp_path / 'attack_results.csv')
  assert res['run']['dataset'] == 'digits'
  assert res['threat'] == {'space': 'input', 'eps_units': 'pixel/255',
                           'clip': None, 'precisions': ['float32'],
                           'gyro_per_g': None, 'info': {}}
  assert {r['precision'] for r in res['rows']} == {'float32'}
  recs = io_lib.read_jsonl(str(tmp_path / 'results.jsonl'))
  assert len(recs) == 2 * 2  # attacks x eps
  for r in recs:
    results_lib.validate(r)
    assert r['threat_model']['space'] == 'input' and r['mcu'] is None
    assert r['dataset']['num_examples'] == 50
  pgd = [r for r in recs if r['attack']['name'] == 'pgd']
  assert pgd[1]['robust_accuracy'] == res['attacks']['pgd']['per_eps'][1][
      'robust_accuracy'] and pgd[1]['attack']['config']['steps'] == 2
  # int8 next to float32 on the same examples; a bad threat option is named
  # before any attack runs.
  config.threat = {'precisions': ['float32', 'int8-litert'],
                   'eps_units': 'pixel'}
  res = runs.attack(None, str(tmp_path))
  dep = res['deployed']
  assert dep['num_examples'] == 50
  f32 = dep['evaluations']['float32->float32']['fgsm']
  q = dep['evaluations']['float32->int8-litert']['fgsm']
  assert f32['clean_accuracy'] == pytest.approx(res['clean_accuracy'])
  assert q['agreement_clean'] >= 0.9
  assert res['rows'][0]['eps_units'] == 'pixel'
  assert {r['precision'] for r in res['rows']} == {'float32', 'int8-litert'}
  config.threat = {'space': 'signal', 'eps_units': 'g'}  # not a pixel unit
  with pytest.raises(ValueError, match="'g'.*'signal'.*'digits'"):
    runs.attack(None, str(tmp_path))


def test_killed_attack_resumes_where_it_stopped(tmp_path, monkeypatch):
  """`--mode=attack` keeps the scheduler's per-example state in the workdir:
  a run killed inside its second attack resumes there (the first attack is
  not run again) with the counts of an uninterrupted run, and the state is
  removed once the results are written."""
  from tinyrobust.evaluation import scheduler  # pylint: disable=g-import-not-at-top
  model = models.get_model('mlp', num_classes=10, hidden=(16,))
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  config = ml_collections.ConfigDict({
      'seed': 1, 'data': {'name': 'digits', 'options': {'seed': 0}},
      'model': {'name': 'mlp'},
      'attack': {'attacks': ['fgsm', 'pgd'], 'eps_grid': [0.0, 0.1],
                 'pgd_steps': 2, 'batch_size': 32, 'max_examples': 50},
  })
  monkeypatch.setattr(train, 'load_trained',
                      lambda workdir: (model, variables, config))
  os.makedirs(tmp_path / 'whole')
  os.makedirs(tmp_path / 'killed')
  ref = runs.attack(None, str(tmp_path / 'whole'))
  calls = []
  real = scheduler.Scheduler._attack_bucket

  def counted(self, kernel, *args):
    calls.append(tuple(self.attacks))  # ('noise',): the sanity baseline
    if kill_at[0] and len(calls) == kill_at[0]:
      raise KeyboardInterrupt
    return real(self, kernel, *args)

  monkeypatch.setattr(scheduler.Scheduler, '_attack_bucket', counted)
  wd = tmp_path / 'killed'
  kill_at = [3]  # fgsm: 2 buckets of 32, then the first pgd bucket
  with pytest.raises(KeyboardInterrupt):
    runs.attack(None, str(wd))
  states = [f for f in os.listdir(wd) if f.startswith(runs.STATE_PREFIX)]
  assert len(states) == 1 and not os.path.exists(wd / 'attack_results.json')
  kill_at[0] = 0
  n_before = len(calls)
  res = runs.attack(None, str(wd))
  attacked = [c for c in calls[n_before:] if c != ('noise',)]
  assert len(attacked) == 2  # pgd's two buckets: fgsm is not run again
  for name in ('fgsm', 'pgd'):
    assert res['attacks'][name]['per_eps'] == ref['attacks'][name]['per_eps']
  assert not [f for f in os.listdir(wd) if f.startswith(runs.STATE_PREFIX)]
