"""`--mode=attack` with `attack.transfer` / `attack.universal` (issue 25):
sources are other trained runs; records carry crafted_on and target."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tinyrobust import io as io_lib
from tinyrobust import models
from tinyrobust import results as results_lib
from tinyrobust import runs
from tinyrobust import train


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
