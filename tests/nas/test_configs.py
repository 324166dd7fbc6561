"""The search configs: variants parse, validate and switch the l5 term."""

import importlib

import pytest

from tinyrobust.nas import search
from tinyrobust.nas import spaces

CONFIGS = ('search_tcn_auritus', 'search_protonn_auritus',
           'search_bonsai_auritus')


@pytest.mark.parametrize('name', CONFIGS)
def test_variants(name):
  mod = importlib.import_module(f'experiments.configs.{name}')
  full = search.resolve_config(mod.get_config())
  quick = search.resolve_config(mod.get_config('quick'))
  noadv = search.resolve_config(mod.get_config('quick,noadv'))
  for c in (full, quick, noadv):
    search.check_search_config(c.search)
    spaces.get_space(c.search.space, **c.search.space_options.to_dict())
    assert c.data.name == 'auritus' and c.search.board == 'stm32f446re'
  assert search.central_weights(full.search) == search.central_weights(
      quick.search)
  assert search.central_weights(full.search)['adversarial'] == 0.5
  assert search.central_weights(noadv.search)['adversarial'] == 0.0
  assert quick.search.num_trials < full.search.num_trials
  assert quick.search.trial_epochs < full.search.trial_epochs
  with pytest.raises(ValueError, match='variant'):
    mod.get_config('fast')
