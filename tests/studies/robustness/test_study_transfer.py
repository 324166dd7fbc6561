"""The study's transfer and universal stages (issue 25): the diagonal equals
the white-box stage, records name source and target, units resume."""

import glob
import os

import numpy as np
import pytest

from experiments.configs.study import parts
from tinyrobust.attacks import universal
from tinyrobust.studies.robustness import runner
from tinyrobust.studies.robustness import transfer_stage


def _config():
  c = parts.study_base(autoattack=False)
  c.attack.pgd_steps = 3
  c.attack.max_examples = 60
  c.attack.batch_size = 32
  c.hardware.measure = False
  c.study.bootstrap = 100
  c.attack.transfer = {'attacks': ('pgd', 'mi-fgsm'), 'ensemble': True,
                       'options': {'mi-fgsm': {'steps': 3}}}
  c.attack.universal = {'eps': (16.0,), 'epochs': 1, 'batch_size': 128}
  digits = parts.data_config('digits', epochs=1, lr=1e-2, batch_size=64)
  c.tasks.image = parts.task('pixel/255', (0.0, 8.0, 16.0))
  m = c.tasks.image.models
  m.mlp_tiny = parts.entry(digits, 'tiny', 'mlp', raw=True, hidden=(8,))
  m.mlp_tiny2 = parts.entry(digits, 'tiny', 'mlp', raw=True, hidden=(6,))
  m.mlp_large = parts.entry(digits, 'large', 'mlp', raw=True, hidden=(32,))
  return c


@pytest.fixture(scope='module')
def study(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp('study_transfer'))
  return wd, runner.run_study(_config(), wd)


def test_diagonal_equals_white_box_and_records_name_source_and_target(study):
  wd, summary = study
  tr = summary['transfer']
  # Every model x the white-box stage's attacks that transfer crafts (pgd).
  assert {(d['model'], d['attack']) for d in tr['diagonal']} == {
      (l, 'pgd') for l in ('mlp_tiny', 'mlp_tiny2', 'mlp_large')}
  assert tr['diagonal_equal']
  # Independently: the white-box stage's per-example robust flags.
  recs, ex = transfer_stage.load_unit(
      os.path.join(wd, 'transfer', 'image__pgd__mlp_large.json'))
  with np.load(os.path.join(wd, 'models', 'image__mlp_large',
                            'attack_examples.npz')) as z:
    np.testing.assert_array_equal(ex[('mlp_large', 'mlp_large')]['robust'],
                                  z['pgd__robust'])
  assert {(r['crafted_on'], r['target']) for r in recs} == {
      ('mlp_large', t) for t in ('mlp_tiny', 'mlp_tiny2', 'mlp_large')}
  srcs = {os.path.basename(p).split('__')[2][:-5] for p in glob.glob(
      os.path.join(wd, 'transfer', 'image__mi-fgsm__*.json'))}
  assert srcs == {'mlp_tiny', 'mlp_tiny2', 'mlp_large', 'ensemble[tiny]'}
  # Findings with intervals and the comparison table, per model and eps.
  f = [x for x in tr['findings'] if x['case'] == 'large']
  assert f and all(x['lo'] <= x['rate'] <= x['hi'] for x in f)
  assert {(r['model'], r['eps']) for r in tr['attacker_table']} == {
      (l, 16.0) for l in ('mlp_tiny', 'mlp_tiny2', 'mlp_large')}
  assert os.path.getsize(os.path.join(wd, 'figures',
                                      'image_transfer_pgd.png')) > 0
  assert 'Diagonal check' in open(os.path.join(wd, 'report.md')).read()


def test_universal_saved_with_protocol_inside_ball(study):
  wd, summary = study
  uap = universal.load_universal(os.path.join(
      wd, 'universal', 'image__mlp_tiny__eps16.npz'))
  assert uap.delta.shape == (8, 8, 1)
  assert np.max(np.abs(uap.delta)) <= 16 / 255 + 1e-6
  assert uap.protocol['eps_in_units'] == 16.0
  assert uap.protocol['split'] == 'train' and uap.protocol['sources'] == [
      'mlp_tiny']
  row = [r for r in summary['transfer']['attacker_table']
         if r['model'] == 'mlp_tiny'][0]
  assert 0 <= row['universal_own'] <= row['clean']


def test_killed_transfer_stage_resumes_only_missing_units(study, monkeypatch):
  wd, _ = study
  victim = os.path.join(wd, 'transfer', 'image__pgd__mlp_tiny.json')
  os.remove(victim)
  calls = []
  real = transfer_stage.transfer_lib.transfer_matrix
  monkeypatch.setattr(transfer_stage.transfer_lib, 'transfer_matrix',
                      lambda s, *a, **k: calls.append(list(s)) or real(
                          s, *a, **k))
  monkeypatch.setattr(transfer_stage.universal_lib, 'fit_universal',
                      lambda *a, **k: pytest.fail('universal re-fitted'))
  runner.run_study(_config(), wd)
  assert calls == [['mlp_tiny']] and os.path.exists(victim)
