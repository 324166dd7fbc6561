"""The study's transfer and universal stages (issue 25).

The stages run inside `test_study.py`'s end-to-end study (its models are
trained once): `check_transfer` and `check_resume` are called from there.
This file's own tests cover the config reader without training anything.
"""

import glob
import os

import ml_collections
import numpy as np
import pytest

from tinyrobust.attacks import config as attack_config
from tinyrobust.attacks import universal
from tinyrobust.studies.robustness import transfer_stage

SOURCES = ('mlp_large', 'mlp_tiny')  # test_study._config(transfer=True)
MODELS = ('mlp_tiny', 'cnn_tiny', 'mlp_large')


def check_transfer(wd, summary):
  """The diagonal equals the white-box stage; records name source and
  target; findings, table, figure; the universal perturbation's file."""
  tr = summary['transfer']
  assert {(d['model'], d['attack']) for d in tr['diagonal']} == {
      (s, 'pgd') for s in SOURCES}
  assert tr['diagonal_equal']
  # Independently of the report: the white-box stage's per-example flags.
  recs, ex = transfer_stage.load_unit(
      os.path.join(wd, 'transfer', 'image__pgd__mlp_large.json'))
  with np.load(os.path.join(wd, 'models', 'image__mlp_large',
                            'attack_examples.npz')) as z:
    np.testing.assert_array_equal(ex[('mlp_large', 'mlp_large')]['robust'],
                                  z['pgd__robust'])
  assert {(r['crafted_on'], r['target'], r['white_box']) for r in recs} == {
      ('mlp_large', t, t == 'mlp_large') for t in MODELS}
  srcs = {os.path.basename(p).split('__')[2][:-5] for p in glob.glob(
      os.path.join(wd, 'transfer', 'image__pgd__*.json'))}
  assert srcs == set(SOURCES) | {'ensemble[tiny]'}
  found = {f['case']: f for f in tr['findings']}
  assert set(found) == {'large', 'tiny'}
  assert sorted(found['large']['pairs']) == [['mlp_large', 'cnn_tiny'],
                                             ['mlp_large', 'mlp_tiny']]
  assert found['tiny']['pairs'] == [['mlp_tiny', 'mlp_large']]
  assert all(f['lo'] <= f['rate'] <= f['hi'] for f in found.values())
  rows = {r['model']: r for r in tr['attacker_table']}
  assert set(rows) == set(MODELS) and all(r['eps'] == 16.0
                                          for r in rows.values())
  assert rows['mlp_large']['transfer_best_source'] == 'mlp_tiny (pgd)'
  assert rows['cnn_tiny']['transfer_ensemble_large'] is None  # one large
  assert os.path.getsize(os.path.join(wd, 'figures',
                                      'image_transfer_pgd.png')) > 0
  assert 'Diagonal check' in open(os.path.join(wd, 'report.md')).read()
  uap = universal.load_universal(os.path.join(
      wd, 'universal', 'image__mlp_tiny__eps16.npz'))
  assert uap.delta.shape == (8, 8, 1)
  assert np.max(np.abs(uap.delta)) <= 16 / 255 + 1e-6
  assert uap.protocol['split'] == 'train' and uap.protocol['sources'] == [
      'mlp_tiny']
  assert 0 <= rows['mlp_tiny']['universal_own'] <= rows['mlp_tiny']['clean']


def check_resume(wd, monkeypatch, rerun):
  """A deleted (killed) transfer unit is the only work a re-run does."""
  victim = os.path.join(wd, 'transfer', 'image__pgd__mlp_tiny.json')
  os.remove(victim)
  calls = []
  real = transfer_stage.transfer_lib.transfer_matrix
  monkeypatch.setattr(transfer_stage.transfer_lib, 'transfer_matrix',
                      lambda s, *a, **k: calls.append(list(s)) or real(
                          s, *a, **k))
  monkeypatch.setattr(transfer_stage.universal_lib, 'fit_universal',
                      lambda *a, **k: pytest.fail('universal re-fitted'))
  rerun()
  assert calls == [['mlp_tiny']] and os.path.exists(victim)


def _acfg(**section):
  return attack_config.attack_config(ml_collections.ConfigDict(
      {'attack': {'attacks': ['fgsm', 'pgd'], 'pgd_steps': 4, **section}}))


def test_transfer_options_follow_the_white_box_attack():
  acfg = _acfg(transfer={'attacks': ['pgd', 'mi-fgsm'],
                         'options': {'mi-fgsm': {'steps': 3}}},
               universal={'eps': 0.5})
  tcfg = attack_config.transfer_config(acfg)
  opts = attack_config.transfer_attack_options(acfg, tcfg, clip=(0, 1))
  assert opts['pgd'] == attack_config.attack_options(acfg, clip=(0, 1))['pgd']
  assert opts['mi-fgsm']['steps'] == 3 and opts['mi-fgsm']['clip'] == (0, 1)
  assert attack_config.attack_index(acfg, 'pgd') == 1
  assert attack_config.universal_config(acfg)['eps'] == (0.5,)
  # Absent subsections change nothing (the white-box caches' keys).
  assert 'transfer' not in _acfg().to_dict()
  assert attack_config.transfer_config(_acfg()) is None
