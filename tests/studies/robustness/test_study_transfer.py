"""The study's transfer and universal stages (issue 25).

The stages run inside `test_study.py`'s end-to-end study (its models are
trained once): `check_transfer` and `check_resume` are called from there.
This file's own tests cover the config reader without training anything.
"""

import functools
import glob
import os

import jax
import ml_collections
import numpy as np
import pytest

from experiments.configs.study import parts
from tinyrobust import models as zoo
from tinyrobust.attacks import config as attack_config
from tinyrobust.attacks import universal
from tinyrobust.nas import candidate
from tinyrobust.studies.robustness import transfer_report
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
  # No large ensemble (one large model); the tiny one -> the large model.
  assert set(found) == {'large', 'tiny', 'tiny ensemble'}
  assert sorted(found['large']['pairs']) == [['mlp_large', 'cnn_tiny'],
                                             ['mlp_large', 'mlp_tiny']]
  assert found['tiny']['pairs'] == [['mlp_tiny', 'mlp_large']]
  assert found['tiny ensemble']['pairs'] == [['ensemble[tiny]',
                                              'mlp_large']]
  assert all(f['lo'] <= f['rate'] <= f['hi'] for f in found.values())
  rows = {r['model']: r for r in tr['attacker_table']}
  assert set(rows) == set(MODELS) and all(r['eps'] == 16.0
                                          for r in rows.values())
  assert rows['mlp_large']['transfer_best_source'] == 'mlp_tiny (pgd)'
  assert rows['cnn_tiny']['transfer_ensemble_large'] is None  # one large
  assert rows['mlp_large']['transfer_ensemble_tiny'] == min(
      r['robust_accuracy'] for r in transfer_stage.load_unit(os.path.join(
          wd, 'transfer', 'image__pgd__ensemble[tiny].json'))[0]
      if r['target'] == 'mlp_large' and r['eps'] == pytest.approx(16 / 255))
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


def _fit_mlp(cfg, hidden, seed):
  """A digits MLP (the zoo's) with its output layer fit in closed form
  (ridge onto one-hot labels, x10; hidden layers as initialised): no
  training loop, so no compilation."""
  ds = candidate.load_split(cfg, 'train')
  model = zoo.get_model('mlp', 10, hidden=hidden)
  x, y = np.asarray(ds.x), np.asarray(ds.y)
  v = jax.tree_util.tree_map(np.asarray, model.init(
      jax.random.PRNGKey(seed), x[:1], train=False))
  h = x.reshape(len(x), -1).astype(np.float64)
  for i in range(len(hidden)):
    d = v['params'][f'Dense_{i}']
    h = np.maximum(h @ d['kernel'] + d['bias'], 0.0)
  f = np.concatenate([h, np.ones((len(h), 1))], 1)
  wb = np.linalg.solve(f.T @ f + 0.1 * np.eye(f.shape[1]),
                       f.T @ (np.eye(10)[y] - 0.1)) * 10
  last = v['params'][f'Dense_{len(hidden)}']
  last['kernel'], last['bias'] = (wb[:-1].astype(np.float32),
                                  wb[-1].astype(np.float32))
  return {'apply': functools.partial(model.apply, train=False),
          'variables': v, 'model': model, 'config': cfg}


def test_float_source_int8_target_in_litert(tmp_path):
  """`attack.transfer.int8`: each model's int8 LiteRT export is a target
  (`<label>@int8`) of the examples crafted on the float models; no attack,
  no change (eps 0); the export agrees with its float model on clean
  inputs; findings pool float -> int8 pairs."""
  c = parts.study_base(autoattack=False)
  c.attack.attacks, c.attack.pgd_steps = ('pgd',), 3
  digits = parts.data_config('digits', epochs=1, lr=1e-2, batch_size=64)
  c.tasks.image = parts.task('pixel/255', (0.0, 16.0))
  c.tasks.image.models.tiny = parts.entry(digits, 'tiny', 'mlp', raw=True,
                                          hidden=())
  c.tasks.image.models.large = parts.entry(digits, 'large', 'mlp', raw=True,
                                           hidden=(32,))
  c.attack.transfer = {'sources': ('large',), 'attacks': ('pgd',),
                       'ensemble': False, 'int8': True}
  acfg = attack_config.attack_config(c)
  tcfg = attack_config.transfer_config(acfg)
  group = ['large', 'tiny']
  models = {l: _fit_mlp(c.tasks.image.models[l].config, h, i)
            for i, (l, h) in enumerate((('large', (32,)), ('tiny', ())))}
  test = candidate.load_split(models['tiny']['config'], 'test')
  x, y = np.asarray(test.x)[:64], np.asarray(test.y)[:64]
  wd = tmp_path / transfer_stage.TRANSFER_DIR
  wd.mkdir()
  transfer_stage._transfer(c, acfg, tcfg, 'image', group, models,
                           (x, y, (0.0, 1.0)), str(wd))
  recs, ex = transfer_stage.load_unit(str(wd / 'image__pgd__large.json'))
  assert {r['target'] for r in recs} == {'large', 'tiny', 'large@int8',
                                         'tiny@int8'}
  for t in ('large@int8', 'tiny@int8'):
    o = ex[('large', t)]
    np.testing.assert_array_equal(o['robust'][0], o['clean'])  # eps 0
    assert not np.any(o['robust'][1] & ~o['clean'])
  # The int8 export predicts as its float model on most clean inputs.
  f32 = np.asarray(models['tiny']['apply'](models['tiny']['variables'], x))
  assert (f32.argmax(-1) == y).mean() > 0.5
  assert np.mean(ex[('large', 'tiny@int8')]['clean'] ==
                 (f32.argmax(-1) == y)) >= 0.9
  found = {f['case']: f for f in transfer_report.findings(
      c, transfer_report.collect(str(tmp_path), 'transfer'))}
  assert found['large -> tiny int8']['pairs'] == [['large', 'tiny@int8']]
  assert found['own float -> int8 (large)']['pairs'] == [['large',
                                                          'large@int8']]
  assert found['large -> tiny int8']['eps'] == pytest.approx(16 / 255)
  assert 'tiny -> large int8' not in found  # no unit crafted on tiny


def test_db_unit_closed_form_and_eps_both_ways():
  """dB -> r = 10^(-dB/20) and back; the report's eps-both-ways rows read
  the white-box stage's annotation; a universal record keeps its own eps."""
  from tinyrobust.studies.robustness import config as study_config  # pylint: disable=g-import-not-at-top
  from tinyrobust.studies.robustness import signal_space  # pylint: disable=g-import-not-at-top
  u = study_config.unit('kws', 'dB')
  assert u.relative and u.to_input(20.0) == pytest.approx(0.1)
  assert u.to_input(-6.0) == pytest.approx(10 ** 0.3)
  assert u.from_input(u.to_input(33.0)) == pytest.approx(33.0)
  task = ml_collections.ConfigDict({'eps_units': 'dB', 'space': 'signal',
                                    'eps_grid': (40.0, 20.0)})
  np.testing.assert_allclose(study_config.input_eps(task, 'kws'),
                             [0.01, 0.1])
  assert signal_space.threat(task) == {'space': 'signal', 'eps_units': 'dB'}
  white = {'attacks': {'pgd': {'per_eps': [
      {'eps': 0.01, 'eps_db': 40.0, 'eps_linf_mean': 0.001,
       'eps_linf_min': 0.0, 'eps_linf_max': 0.004}]}}}
  assert signal_space.eps_both_ways(white, 'linf') == [
      {'eps_db': 40.0, 'r': 0.01, 'mean': 0.001, 'min': 0.0, 'max': 0.004}]
  config = ml_collections.ConfigDict({'tasks': {'kws': task}})
  assert transfer_report._in_units(
      config, {'task': 'kws', 'eps': 0.1}) == pytest.approx(20.0)
  assert transfer_report._in_units(  # a universal radius is not r
      config, {'task': 'kws', 'eps': 0.003, 'eps_in_units': 30.0}) == 30.0
