"""Misuse sweep, search: the search config (`nas.run_search`): every bad value
fails before the workdir is written.
"""

from __future__ import annotations

import os

import ml_collections
import pytest

from tests.misuse import sweep

Case, pkg = sweep.Case, sweep.pkg


def _search_config(ctx, **search):
  c = ctx.config()
  if not search.pop('cnn_kwargs', False):
    c.model = ml_collections.ConfigDict({'name': 'mlp', 'kwargs': {}})
  c.search = ml_collections.ConfigDict({
      'space': 'mlp', 'num_trials': 1, 'trial_epochs': 1, 'board': '',
      'flash_max_bytes': 1e6, 'sram_max_bytes': 1e6})
  try:
    c.attack.eps_grid = (0.05,)  # a search attacks at one eps
    c.attack.max_examples = 40
  except (AttributeError, KeyError) as err:
    raise sweep.SetupError(f'config has no attack section: {err}') from err
  with c.ignore_type():
    for k, v in search.items():
      if k.startswith('attack.'):
        c.attack[k.split('.', 1)[1]] = v
      else:
        c.search[k] = v
  return c


def _bad_search(**search):
  def fn(ctx):
    nas = pkg('tinyrobust.nas')
    d = ctx.path('search')
    try:
      return nas.run_search(_search_config(ctx, **search), d)
    except Exception:
      if os.path.exists(d) and os.listdir(d):
        raise RuntimeError(f'workdir written before failing: '
                           f'{os.listdir(d)}') from None
      raise
  return fn


def _search_cases() -> list[Case]:
  g = 'search'
  return [
      Case('num_trials_zero', g, _bad_search(num_trials=0), ('num_trials',)),
      Case('designer_typo', g, _bad_search(designer='gpx'), ("'gpx'",)),
      Case('executor_typo', g, _bad_search(executor='threads'),
           ("'threads'",)),
      Case('adversarial_attack_missing', g, _bad_search(
          adversarial_attack='pgdd'), ("'pgdd'",)),
      Case('search_eps_grid_two_values', g, _bad_search(
          **{'attack.eps_grid': (0.0, 0.1)}), ('eps_grid',)),
      Case('weight_nan', g, _bad_search(weights={'error': float('nan')}),
           ('nan',)),
      Case('board_typo', g, _bad_search(
          board='esp32', flash_max_bytes=None, sram_max_bytes=None),
           ("'esp32'",)),
      Case('space_does_not_match_model_kwargs', g, _bad_search(
          cnn_kwargs=True), ('features',)),
      Case('sram_gate_typo', g, _bad_search(sram_gate='tflmm'),
           ("'tflmm'",)),
      Case('space_unknown', g, _bad_search(space='resnet99'),
           ("'resnet99'",)),
      Case('weight_spread_negative', g, _bad_search(weight_spread=-0.5),
           ('-0.5',)),
      Case('batch_size_zero', g, _bad_search(batch_size=0), ('batch_size',)),
      Case('num_workers_fraction', g, _bad_search(num_workers=1.5),
           ('1.5',)),
  ]


CASES = _search_cases()


@pytest.mark.parametrize('case', CASES, ids=sweep.ids(CASES))
def test_search_misuse(case, misuse_ctx):
  sweep.check(case, misuse_ctx)
