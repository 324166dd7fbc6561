"""Misuse sweep, transfer: the `attack.transfer` / `attack.universal`
sections (issue 25) in `--mode=attack` and the robustness study, dB
budgets on a threat without a waveform, and the study's signal-space task
fields (`tasks.<task>.space`, dB grids); every bad value is named with what
is allowed, before any attack or training runs.
"""

from __future__ import annotations

import pytest

from tests.misuse import sweep

Case, Verdict, pkg = sweep.Case, sweep.Verdict, sweep.pkg


def _attack(transfer=None, universal=None, threat=None):
  def fn(ctx):
    modes = pkg('tinyrobust.modes')
    c = ctx.attack_config()
    if transfer is not None:
      c.attack.transfer = transfer(ctx) if callable(transfer) else transfer
    if universal is not None:
      c.attack.universal = universal
    if threat is not None:
      c.threat = threat
    return modes.run('attack', c, ctx.run_dir())
  return fn


def _study(transfer=None, universal=None, kws=None):
  """The digits study; `kws` adds a keyword-spotting task with these
  fields (space, eps_units, eps_grid) over its defaults."""
  def fn(ctx):
    parts = pkg('experiments.configs.study.parts')
    runner = pkg('tinyrobust.studies.robustness.runner')
    c = parts.study_base(autoattack=False)
    c.hardware.measure = False
    digits = parts.data_config('digits', epochs=1, lr=1e-2, batch_size=64)
    c.tasks.image = parts.task('pixel/255', (0.0, 8.0))
    c.tasks.image.models.tiny = parts.entry(digits, 'tiny', 'mlp', raw=True,
                                            hidden=(4,))
    c.tasks.image.models.large = parts.entry(digits, 'large', 'mlp',
                                             raw=True, hidden=(16,))
    if transfer is not None:
      c.attack.transfer = transfer
    if universal is not None:
      c.attack.universal = universal
    if kws is not None:
      sc = parts.data_config('speech_commands', epochs=1, lr=1e-2,
                             batch_size=64, features='mfcc')
      c.tasks.kws = parts.task(kws.get('eps_units', 'dB'),
                               kws.get('eps_grid', (30.0, 20.0)))
      if 'space' in kws:
        c.tasks.kws.space = kws['space']
      c.tasks.kws.models.tiny = parts.entry(sc, 'tiny', 'dscnn')
      c.tasks.kws.models.large = parts.entry(sc, 'large', 'kws_cnn')
    return runner.run_study(c, ctx.path('transfer_study'))
  return fn


def _cases() -> list[Case]:
  g = 'transfer'
  return [
      Case('source_workdir_unknown', g, _attack(
          {'sources': ['/nonexistent/run_xyz']}),
           ("'/nonexistent/run_xyz'", 'trained run workdir')),
      Case('source_is_the_target', g, _attack(
          lambda c: {'sources': [c.run_dir()]}), ('attacked run',)),
      Case('sources_a_string', g, _attack({'sources': '/tmp/run'}),
           ("'/tmp/run'", 'list')),
      Case('transfer_attack_unknown', g, _attack(
          {'sources': ['/tmp'], 'attacks': ['cw']}), ("'cw'", 'mi-fgsm')),
      Case('transfer_attack_autoattack', g, _attack(
          {'sources': ['/tmp'], 'attacks': ['autoattack']}),
           ('autoattack', 'pgd, mi-fgsm')),
      Case('transfer_field_typo', g, _attack({'source': ['/tmp']}),
           ("'source'", 'sources')),
      Case('transfer_ensemble_string', g, _attack(
          {'sources': ['/tmp'], 'ensemble': 'yes'}), ("'yes'", 'bool')),
      Case('transfer_options_other_attack', g, _attack(
          {'sources': ['/tmp'], 'options': {'fab': {'steps': 3}}}),
           ("'fab'", "['pgd']")),
      Case('universal_eps_negative', g, _attack(universal={'eps': [-0.1]}),
           ('-0.1', '> 0')),
      Case('universal_eps_string', g, _attack(universal={'eps': 'loud'}),
           ("'loud'",)),
      Case('universal_epochs_zero', g, _attack(universal={'epochs': 0}),
           ('epochs', '>= 1')),
      Case('universal_step_nan', g, _attack(
          universal={'rel_step_size': float('nan')}),
           ('rel_step_size', 'nan')),
      Case('db_on_images', g, _attack(threat={'eps_units': 'dB'}),
           ("'dB'", 'pixel')),
      Case('study_source_label_unknown', g, _study(
          {'sources': ['resnet_nope']}), ("'resnet_nope'", 'large, tiny')),
      Case('study_universal_eps_negative', g, _study(
          universal={'eps': [-4.0]}), ('-4.0', '> 0')),
      Case('transfer_int8_string', g, _study({'int8': 'yes'}),
           ('int8', "'yes'", 'bool')),
      Case('transfer_int8_in_attack_mode', g, _attack(
          {'sources': ['/tmp'], 'int8': True}),
           ('attack.transfer.int8', 'threat.precisions')),
      Case('study_space_unknown', g, _study(kws={'space': 'sensor'}),
           ("'sensor'", 'input, signal')),
      Case('study_db_without_signal_space', g, _study(kws={}),
           ("'dB'", "space='signal'")),
      Case('study_signal_space_mfcc_units', g, _study(
          kws={'space': 'signal', 'eps_units': 'mfcc',
               'eps_grid': (0.0, 1.0)}), ("'mfcc'", 'waveform', 'dB')),
      Case('study_db_grid_increasing', g, _study(
          kws={'space': 'signal', 'eps_grid': (10.0, 20.0)}),
           ('[10.0, 20.0]', 'strictly decreasing')),
      Case('study_db_grid_infinite', g, _study(
          kws={'space': 'signal', 'eps_grid': (float('inf'), 20.0)}),
           ('inf', 'finite')),
  ]


CASES = _cases()


@pytest.mark.parametrize('case', CASES, ids=sweep.ids(CASES))
def test_transfer_misuse(case, misuse_ctx):
  sweep.check(case, misuse_ctx)
