"""The search study: artefacts, the verdict from the numbers, resume, and
the hand-crafted baseline's budget."""

import json
import os

import jax
import jax.numpy as jnp
import pytest

from experiments.configs.search_study import auritus as study_cfg
from tinyrobust import models
from tinyrobust.nas import candidate
from tinyrobust.studies.search import runner as ss


def _config(seeds=2):
  c = study_cfg.get_config(f'quick,model=tcn,seeds={seeds}')
  c.search_study.boards = ('stm32f446re', 'stm32l476rg')
  return c


def _fake(adv_gain: float, calls: list, fail_at: int | None = None):
  """Synthetic searches: FGSM consistency 0.3 (+ adv_gain for `adv`, +
  0.04 for `advtrain`)."""

  def result(cfg, arm):
    gain = {'adv': adv_gain, 'advtrain': 0.04}.get(arm, 0.0)
    base = 0.3 + 0.01 * cfg.seed
    return {'final': {'test_accuracy': 0.8, 'epochs': cfg.train.epochs,
                      'test_fgsm_consistency': base + gain,
                      'test_fgsm_robust_accuracy': base / 2,
                      'test_pgd_consistency': base - 0.05,
                      'test_pgd_robust_accuracy': base / 3,
                      'flash_bytes': 40000, 'sram_bytes': 9000,
                      'flops': 1e6},
            'trials': 6, 'search_s_this_run': 60.0,
            'adversarial_share': {'mean': 0.02}}

  def search_fn(cfg, wd):
    if fail_at is not None and len(calls) == fail_at:
      raise KeyboardInterrupt('killed')
    arm = 'noadv' if cfg.search.adversarial_weight == 0 else 'adv'
    calls.append((wd, arm))
    return result(cfg, arm)

  def handcrafted_fn(cfg, kwargs, wd):
    arm = 'advtrain' if 'adversarial' in cfg.train else 'handcrafted'
    calls.append((wd, arm))
    out = result(cfg, arm)
    out['final']['model_kwargs'] = kwargs
    return out

  return search_fn, handcrafted_fn


def test_artefacts_and_verdict_from_the_numbers(tmp_path):
  calls = []
  s, h = _fake(0.09, calls)
  summary = ss.run_search_study(_config(), str(tmp_path), search_fn=s,
                                handcrafted_fn=h)
  for f in ('table2.csv', 'table2.md', 'pairs.csv', 'runs.csv', 'report.md',
            'summary.json', os.path.join('figures', 'fronts.png')):
    assert os.path.exists(tmp_path / f), f
  assert len(calls) == 2 * 2 * 4  # boards x seeds x arms
  v = summary['verdict']
  assert v['verdict'] == 'holds' and v['n_pairs'] == 4
  assert v['mean_points'] == pytest.approx(9.0)
  assert v['claim_inside_ci']
  assert v['text'] in (tmp_path / 'report.md').read_text()
  rows = {(r['board'], r['arm']): r for r in summary['table2']}
  assert rows[('stm32f446re', 'adv')]['test_fgsm_consistency_mean'] == \
      pytest.approx(0.3 + 0.005 + 0.09)
  assert rows[('stm32f446re', 'adv')]['trials_per_hour'] == pytest.approx(360)
  # adv - advtrain = 0.09 - 0.04 on every pair: the search is better.
  va = summary['verdicts']['adv_vs_advtrain']
  assert va['verdict'] == 'better' and va['n_pairs'] == 4
  assert va['mean_points'] == pytest.approx(5.0)
  assert va['text'] in (tmp_path / 'report.md').read_text()
  assert summary['verdicts']['adv_vs_advtrain_pgd']['verdict'] == \
      'inconclusive'  # equal PGD robust accuracy in every arm
  assert {c['arm'] for c in summary['costs']} == {
      'handcrafted', 'noadv', 'adv', 'advtrain'}


def test_a_term_that_hurts_is_reported_as_such(tmp_path):
  s, h = _fake(-0.05, [])
  v = ss.run_search_study(_config(), str(tmp_path), search_fn=s,
                          handcrafted_fn=h)['verdict']
  assert v['verdict'] == 'hurts' and not v['claim_inside_ci']
  assert 'lowers' in v['text']


def test_killed_study_resumes_without_rerunning_finished_runs(tmp_path):
  calls = []
  s, h = _fake(0.05, calls, fail_at=5)
  with pytest.raises(KeyboardInterrupt):
    ss.run_search_study(_config(), str(tmp_path), search_fn=s,
                        handcrafted_fn=h)
  done = list(calls)
  calls.clear()
  s, h = _fake(0.05, calls)
  ss.run_search_study(_config(), str(tmp_path), search_fn=s,
                      handcrafted_fn=h)
  assert not set(done) & set(calls)
  assert len(done) + len(calls) == 16
  calls.clear()
  ss.run_search_study(_config(), str(tmp_path), search_fn=s,
                      handcrafted_fn=h)
  assert not calls  # a finished study recomputes nothing


def test_bad_config_is_refused_before_any_run(tmp_path):
  c = _config()
  c.search_study.boards = ('stm32f999',)
  with pytest.raises(ValueError, match='stm32f999'):
    ss.run_search_study(c, str(tmp_path / 'a'))
  c = _config()
  c.search_study.arms = ('adv', 'random')
  with pytest.raises(ValueError, match='random'):
    ss.run_search_study(c, str(tmp_path / 'b'))
  assert not os.path.exists(tmp_path / 'a') and not os.path.exists(
      tmp_path / 'b')


def test_handcrafted_baseline_gets_the_final_retrain_budget(tmp_path):
  """Same epochs as a searched model's final retrain (recorded in each
  run's training metrics journal)."""
  from tinyrobust.nas import search  # pylint: disable=g-import-not-at-top
  from tinyrobust.nas import spaces  # pylint: disable=g-import-not-at-top
  c = ss.run_config(_config(), 'tcn', 'stm32f446re', 'adv', 0)
  cfg = search.resolve_config(c)
  space = spaces.get_space('tcn', **cfg.search.space_options.to_dict())
  epochs = []

  def spy_train(tcfg, workdir):
    epochs.append(int(tcfg.train.epochs))
    with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
      f.write(json.dumps({'epochs': tcfg.train.epochs}) + '\n')
    model = models.get_model(tcfg.model.name, 9,
                             **tcfg.model.kwargs.to_dict())
    v = model.init(jax.random.key(0), jnp.zeros((1, 550, 6)))
    return {'val_accuracy': 0.5, 'test_accuracy': 0.5}, v

  calls = []
  ev = candidate.CandidateEvaluator(cfg, str(tmp_path), space, {
      'name': 'b', 'flash_max': 1e7, 'sram_max': 1e7}, train_fn=spy_train)
  ev._attack = lambda *a, **k: ({'fgsm_consistency': 0.5}, {})  # pylint: disable=protected-access
  ev._costs = lambda tcfg: (calls.append(tcfg) or {'cost_timings': {},  # pylint: disable=protected-access
                                                   'flash_bytes': 1}, {})
  os.makedirs(tmp_path / 'h')
  os.makedirs(tmp_path / 'f')
  hand = ev.handcrafted(_config().handcrafted['tcn'].to_dict(),
                        str(tmp_path / 'h'))
  params = space.repair({d.name: d.rvs(random_state=0)[0]
                         for d in space.skopt_dimensions()})
  final = ev.final(params, str(tmp_path / 'f'))
  assert final['epochs'] == hand['epochs'] == cfg.train.epochs
  assert epochs == [cfg.train.epochs] * 2
  for d in ('h', 'f'):  # as each run's journal records it
    with open(tmp_path / d / 'metrics.jsonl') as f:
      assert json.loads(f.readline())['epochs'] == cfg.train.epochs
  assert hand['model_kwargs']['nb_filters'] == 4  # the hand-set TCN


def _run_dir(d, cfg, steps):
  """A fabricated training run: its config and per-epoch journal."""
  os.makedirs(d)
  with open(os.path.join(d, 'config.json'), 'w') as f:
    json.dump(cfg.to_dict(), f)
  with open(os.path.join(d, 'metrics.jsonl'), 'w') as f:
    for i, s in enumerate(steps):
      f.write(json.dumps({'epoch': i + 1, 'step': s}) + '\n')


def test_gradient_evaluations_of_each_arm_by_hand(tmp_path):
  c = _config(seeds=1)
  c.search_study.adv_train = {'method': 'pgd_at', 'steps': 3,
                              'check_examples': 50, 'check_steps': 2}
  b = c.search_study.boards[0]
  adv = ss.run_config(c, 'tcn', b, 'adv', 0)
  hand = ss.run_config(c, 'tcn', b, 'handcrafted', 0)
  at = ss.run_config(c, 'tcn', b, 'advtrain', 0)
  assert at.train.qat_epochs == 0 and hand.train.qat_epochs == 0
  c.search_study.adv_train_qat_epochs = 1  # the advtrain arm only
  assert ss.run_config(c, 'tcn', b, 'advtrain', 0).train.qat_epochs == 1
  assert ss.run_config(c, 'tcn', b, 'adv', 0).train.qat_epochs == 0
  c.search_study.adv_train_qat_epochs = 0
  bs = int(adv.train.batch_size)
  # A search: two trained trials of 2 epochs (10 steps each) + final.
  for t in ('trial_0000', 'trial_0001'):
    _run_dir(str(tmp_path / 's' / 'trials' / t), adv, [10, 20])
  _run_dir(str(tmp_path / 's' / 'final'), adv, [10, 20, 30])
  got = ss.run_grad_evals(adv, 'adv', str(tmp_path / 's'), (5000, 900))
  # Trial attacks: FGSM (1) + PGD (pgd_steps) on max_examples, one eps.
  per = 1 + int(adv.attack.pgd_steps)
  n_att = min(int(adv.attack.max_examples), 900)
  assert got == {'train': (20 + 20 + 30) * bs, 'attack': 2 * n_att * per,
                 'trials': 2, 'total': 70 * bs + 2 * n_att * per}
  _run_dir(str(tmp_path / 'h' / 'final'), hand, [10, 20, 30])
  assert ss.run_grad_evals(hand, 'handcrafted', str(tmp_path / 'h'),
                           (5000, 900))['total'] == 30 * bs
  # PGD-AT-3: 4 evaluations per example; 3 epoch checks of PGD-2 on 50.
  _run_dir(str(tmp_path / 'a' / 'final'), at, [10, 20, 30])
  assert ss.run_grad_evals(at, 'advtrain', str(tmp_path / 'a'),
                           (5000, 900))['total'] == 30 * bs * 4 + 3 * 50 * 2
  assert ss.run_grad_evals(at, 'advtrain', str(tmp_path / 'x')) is None


def test_one_pair_gives_no_verdict():
  from tinyrobust.studies.search import definitions  # pylint: disable=g-import-not-at-top
  v = definitions.verdict([{'adv_minus_noadv_points': 30.0}])
  assert v['verdict'] == 'too few pairs' and 'at least 2 seeds' in v['text']
  v = definitions.compare([{'adv_minus_advtrain_points': -5.0}], arm='adv',
                          baseline='advtrain', metric='test_accuracy')
  assert v['verdict'] == 'too few pairs' and '-5.0' in v['text']
