"""The robustness study: artefacts, caching, resume, computed findings."""

import os

import numpy as np
import pytest

from experiments.configs.study import parts
from tinyrobust import evaluation
from tinyrobust import train
from tinyrobust.studies.robustness import config as study_config
from tinyrobust.studies.robustness import runner
from tinyrobust.studies.robustness import tables
from tests.studies.robustness import test_study_transfer


def _config(transfer=False, autoattack=True):
  c = parts.study_base(autoattack=autoattack)
  if transfer:  # issue 25's stages (tests/studies/robustness/test_study_transfer.py)
    c.attack.transfer = {'attacks': ('pgd',),
                         'sources': ('mlp_large', 'mlp_tiny')}
    c.attack.universal = {'eps': (16.0,), 'epochs': 1}
  c.attack.pgd_steps = 3
  # AutoAttack stays in the study (its stages and records), at a budget
  # for CI's time: 5 steps, 2 targets, 50 queries.
  if autoattack:
    c.attack.options.autoattack = {'version': 'standard', 'steps': 5,
                                   'n_target_classes': 2, 'queries': 50}
  c.hardware.measure = False
  c.study.bootstrap = 200
  digits = parts.data_config('digits', epochs=2, lr=1e-2, batch_size=64)
  c.tasks.image = parts.task('pixel/255', (0.0, 16.0))
  m = c.tasks.image.models
  m.mlp_tiny = parts.entry(digits, 'tiny', 'mlp', raw=True, hidden=(8,))
  m.cnn_tiny = parts.entry(digits, 'tiny', 'cnn', raw=True, features=(2, 4))
  m.mlp_large = parts.entry(digits, 'large', 'mlp', raw=True, hidden=(64,))
  return c


class Killed(Exception):
  pass


class Spy:
  """Counts training runs; optionally fails on the n-th (a killed study)."""

  def __init__(self, fail_on=None):
    self.calls, self.fail_on = [], fail_on

  def __call__(self, cfg, workdir):
    self.calls.append(os.path.basename(workdir))
    if self.fail_on is not None and len(self.calls) == self.fail_on:
      raise Killed('killed')
    return train.train_and_evaluate(cfg, workdir)


def test_study_end_to_end_then_cached(tmp_path, monkeypatch):
  wd = str(tmp_path)
  spy = Spy()
  summary = runner.run_study(_config(transfer=True), wd, train_fn=spy)
  assert len(spy.calls) == 3
  test_study_transfer.check_transfer(wd, summary)
  for name in ('table1.csv', 'gap.csv', 'curves.csv', 'report.md',
               'summary.json', 'figures/image_curves.png',
               'figures/image_tiny_vs_large.png',
               'figures/params_vs_consistency.png'):
    assert os.path.getsize(os.path.join(wd, name)) > 0, name
  report = open(os.path.join(wd, 'report.md')).read()
  for text in ('Table 1', 'pixel/255', 'consistency', 'Seed 0'):
    assert text in report
  # The gap is computed from the stored curves: check it by hand.
  t1 = {r['model']: r for r in summary['table1']}
  assert t1['mlp_large']['params'] > t1['mlp_tiny']['params']
  curves = [r for r in tables.curves(_config_resolved(), _results(wd))
            if r['attack'] == 'fgsm' and r['eps'] > 0]
  by = {r['model']: r['consistency'] for r in curves}
  want = 100 * (by['mlp_large'] - (by['mlp_tiny'] + by['cnn_tiny']) / 2)
  (row,) = [g for g in summary['gap'] if g['attack'] == 'fgsm'
            and g['metric'] == 'consistency']
  assert row['gap_points'] == pytest.approx(want)
  assert row['ci95_low_points'] <= row['gap_points'] <= row['ci95_high_points']
  # A re-run trains nothing and attacks nothing.
  attacked = []
  real = evaluation.robustness_run
  monkeypatch.setattr(evaluation, 'robustness_run',
                      lambda *a, **k: attacked.append(1) or real(*a, **k))
  spy2 = Spy()
  again = runner.run_study(_config(transfer=True), wd, train_fn=spy2)
  assert spy2.calls == [] and attacked == []
  assert again['gap'] == summary['gap']
  test_study_transfer.check_resume(wd, monkeypatch,
                                   lambda: runner.run_study(
                                       _config(transfer=True), wd))


def _config_resolved():
  return runner.resolve_config(_config())


def _results(wd):
  return {(t, l): tables.load_model_results(wd, t, l)
          for t, l, _ in study_config.entries(_config())}


def test_killed_study_resumes_without_rerunning_finished_models(tmp_path):
  wd = str(tmp_path)
  # Training is what this kills; AutoAttack's stages (CI's time) are
  # covered by the end-to-end test above.
  config = lambda: _config(autoattack=False)
  with pytest.raises(RuntimeError, match='killed'):
    runner.run_study(config(), wd, train_fn=Spy(fail_on=2))
  order = [f'{t}__{l}' for t, l, _ in study_config.entries(config())]
  spy = Spy()
  runner.run_study(config(), wd, train_fn=spy)
  assert order[0] not in spy.calls  # finished before the kill
  assert spy.calls == order[1:]


def _fake(consistency, robust, n=50):
  """Stored results of a model with the given per-eps rates [E]."""
  rng = np.random.default_rng(0)
  def rows(rates):
    return np.stack([rng.permutation(np.arange(n) < round(r * n))
                     for r in rates])
  return {'examples': {'fgsm__consistent': rows(consistency),
                       'fgsm__robust': rows(robust)},
          'attack': {'eps_grid': [0.0, 0.1, 0.2],
                     'attacks': {'fgsm': {}}}}


def test_findings_say_when_tiny_models_are_more_robust():
  c = _config_resolved()
  results = {('image', 'mlp_tiny'): _fake([1, .9, .8], [1, .9, .8]),
             ('image', 'cnn_tiny'): _fake([1, .9, .8], [1, .8, .7]),
             ('image', 'mlp_large'): _fake([1, .5, .3], [1, .4, .2])}
  found = tables.findings(tables.gap(c, results, n_boot=300))
  cons = [f for f in found if f['metric'] == 'consistency'][0]
  assert cons['verdict'] == 'reversed'
  assert cons['gap_points'] == pytest.approx(100 * ((.5 + .3) / 2 - .85))
  assert not cons['within_study_range'] and 'MORE robust' in cons['text']
  # And the other way round, the finding holds.
  results[('image', 'mlp_large')] = _fake([1, 1, 1], [1, 1, 1])
  found = tables.findings(tables.gap(c, results, n_boot=300))
  assert {f['verdict'] for f in found} == {'holds'}


@pytest.mark.parametrize('mutate,match', [
    (lambda c: c.tasks.image.models.mlp_tiny.config.model.update(
        {'name': 'resnet999'}), "Unknown model 'resnet999'"),
    (lambda c: c.tasks.update({'video': c.tasks.image}), "Unknown study task"),
    (lambda c: c.tasks.image.update({'eps_grid': (0.0, 8.0, 300.0)}),
     'beyond the input range'),
    (lambda c: c.tasks.image.update({'eps_units': 'g|deg/s'}),
     "not a unit of task 'image'"),
    (lambda c: c.tasks.image.models.mlp_large.config.data.update(
        {'name': 'basic_motions'}), "not data of task 'image'"),
    (lambda c: c.tasks.image.models.cnn_tiny.config.model.kwargs.update(
        {'input_shape': (100, 6)}), 'does not fit its data'),
    (lambda c: c.tasks.image.models.mlp_large.update({'kind': 'tiny'}),
     'both tiny and large'),
])
def test_bad_study_configs_fail_before_training(tmp_path, mutate, match):
  c = _config()
  mutate(c)
  spy = Spy()
  with pytest.raises(ValueError, match=match):
    runner.run_study(c, str(tmp_path / 'w'), train_fn=spy)
  assert spy.calls == []
  assert not os.path.exists(tmp_path / 'w' / 'models')
