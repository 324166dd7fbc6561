"""Misuse sweep, adv_train: bad adversarial-training settings of the search
study's `advtrain` arm (`search_study.adv_train`) and of the robustness
study's `adv_train` variant (`study.adv_train*`, `tasks.<t>.adv_train_eps`)
and of int8-aware training (`train.qat_epochs`) fail with the bad value
named before any run and before the workdir exists.
"""

from __future__ import annotations

import os

import pytest

from tests.misuse import sweep

Case = sweep.Case


def _search_study(**adv):
  """Runs the search study (model tcn, one seed, one board) with
  `search_study.adv_train` updated by `adv` (`arms=...` sets the arms)."""
  def fn(ctx):
    auritus = sweep.pkg('experiments.configs.search_study.auritus')
    runner = sweep.pkg('tinyrobust.studies.search.runner')
    c = auritus.get_config('quick,model=tcn,seeds=1,board=stm32f746zg')
    with c.ignore_type():
      if 'arms' in adv:
        c.search_study.arms = adv.pop('arms')
      if 'whole' in adv:
        c.search_study.adv_train = adv.pop('whole')
      if 'qat' in adv:
        c.search_study.adv_train_qat_epochs = adv.pop('qat')
      for k, v in adv.items():
        c.search_study.adv_train[k] = v
    d = ctx.path('search_study')
    runner.run_search_study(c, d, search_fn=_never, handcrafted_fn=_never)
    return _nothing_written(d)
  return fn


def _never(*args):
  raise AssertionError('a run started despite the bad config')


def _nothing_written(d):
  if os.path.exists(d):
    raise RuntimeError(f'workdir written: {os.listdir(d)}')
  return 'accepted'


def _robustness_study(study=None, task=None, clash=False):
  """Runs a two-model digits robustness study with `study.adv_train=pgd_at`
  and `study` / `tasks.image` fields updated."""
  def fn(ctx):
    parts = sweep.pkg('experiments.configs.study.parts')
    runner = sweep.pkg('tinyrobust.studies.robustness.runner')
    c = parts.study_base(autoattack=False)
    c.hardware.measure = False
    c.study.adv_train = 'pgd_at'
    digits = parts.data_config('digits', epochs=1, lr=1e-2, batch_size=64)
    c.tasks.image = parts.task('pixel/255', (0.0, 16.0))
    m = c.tasks.image.models
    m.mlp_tiny = parts.entry(digits, 'tiny', 'mlp', raw=True, hidden=(8,))
    m.mlp_large = parts.entry(digits, 'large', 'mlp', raw=True, hidden=(32,))
    if clash:
      m.mlp_tiny_pgd_at = parts.entry(digits, 'tiny', 'mlp', raw=True)
    with c.ignore_type():
      for k, v in (study or {}).items():
        c.study[k] = v
      for k, v in (task or {}).items():
        c.tasks.image[k] = v
    d = ctx.path('study')
    runner.run_study(c, d, train_fn=_never)
    return _nothing_written(d)
  return fn


def _train(**fields):
  """Trains the quick digits CNN with `train` fields set (e.g.
  `qat_epochs`, int8-aware training); must fail before the workdir."""
  def fn(ctx):
    digits_cnn = sweep.pkg('experiments.configs.train.digits_cnn')
    train = sweep.pkg('tinyrobust.train')
    c = digits_cnn.get_config('quick')
    with c.ignore_type():
      for k, v in fields.items():
        c.train[k] = v
    d = ctx.path('run')
    train.train_and_evaluate(c, d)
    return _nothing_written(d)
  return fn


def _cases() -> list[Case]:
  g = 'adv_train'
  return [
      Case('search_method_typo', g, _search_study(method='pgdd'),
           ("'pgdd'", 'pgd_at')),
      Case('search_method_none', g, _search_study(method='none'),
           ("'none'", 'handcrafted', 'pgd_at')),
      Case('search_eps_negative', g, _search_study(eps=-0.1), ('-0.1',)),
      Case('search_steps_zero', g, _search_study(steps=0),
           ('steps', 'got 0')),
      Case('search_field_typo', g, _search_study(stepz=3), ("'stepz'",)),
      Case('search_section_a_string', g, _search_study(whole='pgd_at'),
           ("'pgd_at'", 'section')),
      Case('search_arm_typo', g, _search_study(
          arms=('handcrafted', 'adv_train')), ("'adv_train'", 'advtrain')),
      Case('search_qat_epochs_beyond_epochs', g, _search_study(qat=99),
           ('qat_epochs', '99', 'advtrain')),
      Case('study_method_typo', g, _robustness_study({'adv_train': 'pgd'}),
           ("'pgd'", 'pgd_at')),
      Case('study_kinds_typo', g, _robustness_study(
          {'adv_train_kinds': ('small',)}), ("'small'", 'tiny')),
      Case('study_option_typo', g, _robustness_study(
          {'adv_train_options': {'stepz': 3}}), ("'stepz'",)),
      Case('study_option_sets_eps', g, _robustness_study(
          {'adv_train_options': {'eps': 0.1}}), ("'eps'", 'adv_train_eps')),
      Case('study_options_a_string', g, _robustness_study(
          {'adv_train_options': 'steps=3'}), ("'steps=3'", 'dict')),
      Case('study_eps_beyond_range', g, _robustness_study(
          task={'adv_train_eps': 300.0}), ('300', 'up to 255')),
      Case('study_eps_zero', g, _robustness_study(
          task={'adv_train_eps': 0.0}), ('adv_train_eps=0.0',)),
      Case('study_label_taken', g, _robustness_study(clash=True),
           ("'mlp_tiny_pgd_at'",)),
      Case('study_qat_epochs_string', g, _robustness_study(
          {'adv_train_qat_epochs': 'last'}), ('adv_train_qat_epochs',
                                              "'last'")),
      Case('qat_epochs_negative', g, _train(qat_epochs=-1),
           ('qat_epochs', 'got -1')),
      Case('qat_epochs_beyond_epochs', g, _train(qat_epochs=4),
           ('got 4', 'train.epochs=3')),
      Case('qat_epochs_a_bool', g, _train(qat_epochs=True),
           ('qat_epochs', 'got True')),
      Case('qat_epochs_a_fraction', g, _train(qat_epochs=0.5),
           ('qat_epochs', 'got 0.5')),
      Case('qat_epochs_a_string', g, _train(qat_epochs='2'),
           ('qat_epochs', "got '2'")),
  ]


CASES = _cases()


@pytest.mark.parametrize('case', CASES, ids=sweep.ids(CASES))
def test_adv_train_misuse(case, misuse_ctx):
  sweep.check(case, misuse_ctx)
