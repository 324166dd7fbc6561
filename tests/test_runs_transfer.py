"""`--mode=attack` with `attack.transfer` / `attack.universal` (issue 25):
sources are other trained runs; records carry crafted_on and target."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tinyrobust import data as data_lib
from tinyrobust import fileio as io_lib
from tinyrobust import models
from tinyrobust import results as results_lib
from tinyrobust import runs
from tinyrobust import train
from tinyrobust.evaluation import inputs


def _runs(tmp_path, monkeypatch):
  """Three stand-in runs on digits: the target, an identical copy of it and
  another model; `load_trained` serves them by workdir."""
  base = {'seed': 1, 'data': {'name': 'digits', 'options': {'seed': 0}},
          'model': {'name': 'mlp'}, 'train': {}}
  model = models.get_model('mlp', num_classes=10, hidden=(16,))
  other = models.get_model('mlp', num_classes=10, hidden=(8,))
  v = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  w = other.init(jax.random.key(1), jnp.zeros((1, 8, 8, 1)))
  served = {}
  for name, m, var in (('target', model, v), ('copy', model, v),
                       ('other', other, w)):
    d = str(tmp_path / name)
    os.makedirs(d)
    io_lib.write_json(os.path.join(d, 'config.json'), base)
    served[d] = (m, var, ml_collections.ConfigDict(base))
  monkeypatch.setattr(train, 'load_trained',
                      lambda wd: served[os.path.abspath(wd)])
  return [str(tmp_path / n) for n in ('target', 'copy', 'other')]


def _config(sources, **universal):
  c = ml_collections.ConfigDict({
      'seed': 1, 'data': {'name': 'digits', 'options': {'seed': 0}},
      'model': {'name': 'mlp'}, 'train': {},
      'attack': {'attacks': ['pgd'], 'eps_grid': [0.0, 0.1],
                 'pgd_steps': 2, 'batch_size': 16, 'max_examples': 32,
                 'transfer': {'sources': sources, 'attacks': ['pgd']}}})
  if universal:
    c.attack.universal = universal
  return c


def test_transfer_from_an_identical_copy_equals_white_box(tmp_path,
                                                          monkeypatch):
  target, copy, other = _runs(tmp_path, monkeypatch)
  res = runs.attack(_config([copy, other], eps=[0.1], epochs=1,
                            batch_size=64), target)
  rows = res['transfer']['rows']
  pgd = res['attacks']['pgd']['per_eps']
  by = {(r['crafted_on'], r['eps']): r for r in rows if r['attack'] == 'pgd'}
  assert set(by) == {(s, e) for s in (copy, other, 'ensemble')
                     for e in (0.0, 0.1)}
  for e_idx, p in enumerate(pgd):  # same attack, seed, key index, examples
    assert by[(copy, p['eps'])]['robust_accuracy'] == p['robust_accuracy']
  assert by[(other, 0.1)]['source_members'] == [other]
  assert by[('ensemble', 0.1)]['source_members'] == [copy, other]
  uni = [r for r in rows if r['attack'] == 'universal']
  assert {r['crafted_on'] for r in uni} == {target, copy, other}
  assert os.path.exists(os.path.join(target, 'universal_self_eps0.1.npz'))
  recs = io_lib.read_jsonl(os.path.join(target, 'results.jsonl'))
  for r in recs:
    results_lib.validate(r)
    assert r['attack']['target'] == target
  white = [r for r in recs if not r['attack']['transfer']]
  assert {tuple(r['attack']['crafted_on']) for r in white} == {(target,)}
  assert [r['attack']['crafted_on'] for r in recs
          if r['attack']['name'] == 'pgd' and r['attack']['transfer']
          and r['threat_model']['eps'] == 0.1] == [[copy], [other],
                                                   [copy, other]]
  assert np.isclose([r['robust_accuracy'] for r in recs if r['attack'][
      'name'] == 'universal' and r['attack']['crafted_on'] == [copy]][0],
                    [r['robust_accuracy'] for r in recs if r['attack'][
                        'name'] == 'universal' and r['attack'][
                            'crafted_on'] == [target]][0])


@pytest.mark.parametrize('sources,match', [
    (['missing'], "'missing' is not a trained run workdir"),
    (['target'], 'lists the attacked run'),
])
def test_bad_sources_named_before_any_attack(tmp_path, monkeypatch, sources,
                                             match):
  target, _, _ = _runs(tmp_path, monkeypatch)
  called = []
  monkeypatch.setattr(runs, 'robustness', lambda *a, **k: called.append(1))
  srcs = [str(tmp_path / s) if s == 'target' else s for s in sources]
  with pytest.raises(ValueError, match=match):
    runs.attack(_config(srcs), target)
  assert not called


def test_db_budget_reported_both_ways_and_transfers(tmp_path, monkeypatch,
                                                    shared_data_dir):
  """Speech Commands waveforms, eps as SNR in dB: the radius per clip is
  rms(x) 10^(-dB/20) (closed form), and a copy of the target as the source
  gives the white-box numbers."""
  del shared_data_dir
  data = {'name': 'speech_commands', 'options': {'features': 'waveform',
                                                 'seed': 0}}
  model = models.get_model('mlp', num_classes=12, hidden=(4,))
  v = model.init(jax.random.key(0), jnp.zeros((1, 16000)))
  base = ml_collections.ConfigDict({'seed': 0, 'data': data, 'model': {
      'name': 'mlp'}, 'train': {}})
  served = {}
  for name in ('target', 'copy'):
    d = str(tmp_path / name)
    os.makedirs(d)
    io_lib.write_json(os.path.join(d, 'config.json'), base.to_dict())
    served[d] = (model, v, base)
  monkeypatch.setattr(train, 'load_trained',
                      lambda wd: served[os.path.abspath(wd)])
  target, copy = (str(tmp_path / n) for n in ('target', 'copy'))
  c = ml_collections.ConfigDict(base.to_dict())
  c.threat = {'eps_units': 'dB'}
  c.attack = {'attacks': ['pgd'], 'eps_grid': [20.0, 40.0], 'pgd_steps': 2,
              'batch_size': 8, 'max_examples': 8,
              'transfer': {'sources': [copy], 'attacks': ['pgd']}}
  res = runs.attack(c, target)
  per_eps = res['attacks']['pgd']['per_eps']
  assert [p['eps_db'] for p in per_eps] == [40.0, 20.0]  # r ascending
  assert [p['eps'] for p in per_eps] == pytest.approx([0.01, 0.1])
  x = data_lib.load(  # the evaluated clips
      'speech_commands', 'test', **data['options']).x
  x = x[inputs.subset_indices(len(x), 8, 0)].astype(np.float64)
  rms = np.sqrt(np.mean(x ** 2, axis=1))
  assert per_eps[1]['eps_linf_mean'] == pytest.approx(rms.mean() * 0.1,
                                                      rel=1e-5)
  assert per_eps[0]['eps_linf_max'] == pytest.approx(rms.max() * 0.01,
                                                     rel=1e-5)
  assert res['eps_protocol']['eps_units'] == 'dB'
  rows = {r['eps_in_units']: r for r in res['transfer']['rows']}
  assert set(rows) == {20.0, 40.0}
  for p in per_eps:
    assert rows[p['eps_db']]['robust_accuracy'] == p['robust_accuracy']
