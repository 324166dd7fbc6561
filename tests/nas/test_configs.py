"""The search configs: variants parse, validate and switch the l5 term."""

import importlib

import pytest

from tinyrobust.nas import search
from tinyrobust.nas import spaces

MODELS = ('tcn', 'protonn', 'bonsai')


@pytest.mark.parametrize('model', MODELS)
def test_variants(model):
  mod = importlib.import_module('experiments.configs.search.auritus')
  full = search.resolve_config(mod.get_config(f'model={model}'))
  quick = search.resolve_config(mod.get_config(f'quick,model={model}'))
  noadv = search.resolve_config(mod.get_config(f'quick,noadv,model={model}'))
  for c in (full, quick, noadv):
    assert c.model.name == model
    search.check_search_config(c.search, c.attack)
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
