"""The robustness study's adv_train variant (studies.robustness.defended):
the defended copies' configs, the gap with defended tiny models, the
verdicts and the costs checked by hand on fabricated stored results (an
end-to-end study run trains 3+ models: too slow for CI; the runner's hook
is `resolve_config`, checked here), and bad settings refused before any
training."""

import os

import numpy as np
import pytest

from experiments.configs.study import parts
from tinyrobust import fileio
from tinyrobust.studies.robustness import defended
from tinyrobust.studies.robustness import runner
from tinyrobust.studies.robustness import tables


def _config(method='pgd_at'):
  c = parts.study_base(autoattack=False)
  c.hardware.measure = False
  c.study.bootstrap = 200
  c.study.adv_train = method
  c.study.adv_train_kinds = ('tiny',)
  c.study.adv_train_options = {'steps': 2, 'check_examples': 32}
  digits = parts.data_config('digits', epochs=1, lr=1e-2, batch_size=64)
  c.tasks.image = parts.task('pixel/255', (0.0, 16.0, 32.0))
  m = c.tasks.image.models
  m.mlp_tiny = parts.entry(digits, 'tiny', 'mlp', raw=True, hidden=(8,))
  m.mlp_large = parts.entry(digits, 'large', 'mlp', raw=True, hidden=(64,))
  return c


def test_expand_adds_defended_copies_and_none_is_the_plain_study():
  c = runner.resolve_config(_config())
  m = c.tasks.image.models
  assert sorted(m) == ['mlp_large', 'mlp_tiny', 'mlp_tiny_pgd_at']
  e = m.mlp_tiny_pgd_at
  assert (e.kind, e.adv_train, e.defends) == ('tiny', 'pgd_at', 'mlp_tiny')
  # The lower median of the non-zero grid (16 pixel/255) in input units.
  assert c.tasks.image.adv_train_eps == 16.0
  assert e.config.train.adversarial.to_dict() == {
      'method': 'pgd_at', 'eps': pytest.approx(16 / 255), 'steps': 2,
      'check_examples': 32}
  assert m.mlp_tiny.config.train.get('adversarial', {}).get(
      'method', 'none') == 'none'
  assert e.config.model.to_dict() == m.mlp_tiny.config.model.to_dict()
  plain = runner.resolve_config(_config('none'))
  assert sorted(plain.tasks.image.models) == ['mlp_large', 'mlp_tiny']
  assert 'adv_train' not in plain.study  # one pinned form of 'off'
  assert sorted(defended.standard(c).tasks.image.models) == sorted(
      plain.tasks.image.models)
  assert e.config.train.get('qat_epochs', 0) == 0
  q = _config()
  q.study.adv_train_qat_epochs = 1  # int8-aware copies; originals as they were
  m = runner.resolve_config(q).tasks.image.models
  assert m.mlp_tiny_pgd_at.config.train.qat_epochs == 1
  assert m.mlp_tiny.config.train.get('qat_epochs', 0) == 0
  q.study.adv_train_qat_epochs = 2  # more than the copies' 1 epoch
  with pytest.raises(ValueError, match='adv_train_qat_epochs.*mlp_tiny_pgd_at'
                     '.*got 2'):
    runner.resolve_config(q)


def _fake(consistency, robust, acc, n=50):
  """Stored results of a model with per-eps rates [E] (eps 0, 16, 32)."""
  rng = np.random.default_rng(0)
  rows = lambda rates: np.stack([rng.permutation(np.arange(n) < round(r * n))
                                 for r in rates])
  per = [{'eps': e, 'consistency': c, 'robust_accuracy': r}
         for e, c, r in zip((0.0, 16 / 255, 32 / 255), consistency, robust)]
  return {'examples': {'pgd__consistent': rows(consistency),
                       'pgd__robust': rows(robust)},
          'attack': {'eps_grid': [0.0, 16 / 255, 32 / 255],
                     'attacks': {'pgd': {'per_eps': per}}},
          'final': {'test_accuracy': acc}}


def _results():
  return {('image', 'mlp_tiny'): _fake([1, .5, .3], [.9, .4, .2], .9),
          ('image', 'mlp_large'): _fake([1, .9, .8], [.96, .8, .7], .96),
          ('image', 'mlp_tiny_pgd_at'): _fake([1, .9, .8], [.84, .8, .7],
                                              .84)}


def _journal(wd, label, seconds):
  d = os.path.join(wd, 'models', f'image__{label}')
  os.makedirs(d)
  for i, s in enumerate(seconds):
    fileio.append_jsonl(os.path.join(d, 'metrics.jsonl'),
                    {'epoch': i + 1, 'step': 10 * (i + 1), 'seconds': s})
  fileio.append_jsonl(os.path.join(d, 'metrics.jsonl'), {'final': True})


def test_gap_verdicts_and_costs_by_hand(tmp_path):
  c = runner.resolve_config(_config())
  res = _results()
  rows = defended.gaps(c, res, n_boot=200, seed=0)
  assert {(r['tiny'], r['large']) for r in rows} == {
      ('standard', 'standard'), ('adv_train', 'standard')}
  by = {(r['tiny'], r['metric']): r for r in rows}
  # Means over eps > 0: large - tiny.
  assert by[('standard', 'robust_accuracy')]['gap_points'] == pytest.approx(
      100 * ((.8 + .7) / 2 - (.4 + .2) / 2))
  assert by[('adv_train', 'robust_accuracy')]['gap_points'] == \
      pytest.approx(0.0)
  # The standard row is the study's own gap on the undefended models.
  std = tables.gap(defended.standard(c), res, n_boot=200, seed=0)
  assert [r['gap_points'] for r in std] == [
      r['gap_points'] for r in rows if r['tiny'] == 'standard']
  found = defended.findings(rows)
  assert {f['verdict'] for f in found} == {'closes'}
  assert 'closes the gap' in found[0]['text']
  wd = str(tmp_path)
  _journal(wd, 'mlp_tiny', [2.0, 2.0])
  _journal(wd, 'mlp_tiny_pgd_at', [5.0, 7.0])
  (cost,) = defended.costs(c, wd, res)
  assert cost['clean_cost_points'] == pytest.approx(6.0)
  assert cost['train_time_x'] == pytest.approx(3.0)
  assert cost['pgd_robust_standard'] == pytest.approx(0.3)
  assert cost['pgd_robust_defended'] == pytest.approx(0.75)
  _journal(wd, 'mlp_large', [1.0])
  t1 = defended.annotate_table1(c, wd, [
      {'task': 'image', 'model': l, 'test_accuracy': r['final'][
          'test_accuracy']} for (_, l), r in res.items()])
  t1 = {r['model']: r for r in t1}
  assert t1['mlp_tiny_pgd_at']['adv_train'] == 'pgd_at'
  assert t1['mlp_tiny_pgd_at']['train_time_x'] == pytest.approx(3.0)
  assert t1['mlp_large']['adv_train'] == 'none'


def test_a_remaining_gap_is_reported_as_such():
  c = runner.resolve_config(_config())
  res = _results()
  res[('image', 'mlp_tiny_pgd_at')] = _fake([1, .6, .4], [.8, .45, .25], .8)
  found = defended.findings(defended.gaps(c, res, n_boot=200, seed=0))
  assert {f['verdict'] for f in found} == {'remains'}


@pytest.mark.parametrize('mutate,match', [
    (lambda c: c.study.update({'adv_train': 'pgd'}), "'pgd'.*pgd_at"),
    (lambda c: c.study.update({'adv_train_kinds': ('small',)}), 'small'),
    (lambda c: c.study.adv_train_options.update({'stepz': 3}), 'stepz'),
    (lambda c: c.study.adv_train_options.update({'steps': 0}),
     'steps must be an int >= 1, got 0'),
    (lambda c: c.tasks.image.update({'adv_train_eps': 300.0}),
     'adv_train_eps=300.0.*up to 255'),
    (lambda c: c.study.adv_train_options.update({'eps': 0.1}), "'eps'"),
])
def test_bad_adv_train_settings_fail_before_training(tmp_path, mutate, match):
  c = _config()
  mutate(c)
  with pytest.raises(ValueError, match=match):
    runner.run_study(c, str(tmp_path / 'w'),
                     train_fn=lambda *a: pytest.fail('trained'))
  assert not os.path.exists(tmp_path / 'w')
