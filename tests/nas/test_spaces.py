"""Search spaces: validity of samples, the TCN dilation repair, kwargs."""

import itertools

import pytest

from tinyrobust.nas import spaces


@pytest.mark.parametrize('name', sorted(spaces.SPACES))
def test_samples_are_valid_points(name):
  space = spaces.get_space(name)
  for params in space.sample(20, seed=1):
    point = space.to_point(params)  # raises when outside the box
    assert space.to_params(point) == params
    assert space.repair(params) == params  # samples come repaired
    kwargs = space.model_kwargs(params)
    assert isinstance(kwargs, dict) and kwargs


def test_tcn_repair_enforces_three_to_eight_dilations():
  space = spaces.get_space('tcn')
  base = {'nb_filters': 8, 'kernel_size': 3, 'use_skip_connections': 1}
  for flags in itertools.product((0, 1), repeat=9):
    params = {**base, **{f'dil_{d}': f
                         for d, f in zip(spaces.TCN_DILATIONS, flags)}}
    fixed = space.repair(params)
    dil = space.model_kwargs(fixed)['dilations']
    assert 3 <= len(dil) <= 8, (flags, dil)
    assert space.repair(fixed) == fixed  # idempotent
    on = [d for d, f in zip(spaces.TCN_DILATIONS, flags) if f]
    if 3 <= len(on) <= 8:
      assert dil == on  # valid subsets are untouched
  none_on = {**base, **{f'dil_{d}': 0 for d in spaces.TCN_DILATIONS}}
  assert space.model_kwargs(space.repair(none_on))['dilations'] == [1, 2, 4]
  all_on = {**base, **{f'dil_{d}': 1 for d in spaces.TCN_DILATIONS}}
  assert space.model_kwargs(space.repair(all_on))['dilations'] == [
      1, 2, 4, 8, 16, 32, 64, 128]


def test_tcn_kwargs_and_conditional_encodings():
  tcn = spaces.get_space('tcn')
  p = tcn.sample(1, seed=0)[0]
  kw = tcn.model_kwargs(p)
  assert set(kw) == {'nb_filters', 'kernel_size', 'use_skip_connections',
                     'dilations'}
  assert isinstance(kw['use_skip_connections'], bool)
  fg = spaces.get_space('fastgrnn')
  kw = fg.model_kwargs({'hidden_size': 16, 'w_rank': 0, 'u_rank': 3})
  assert kw == {'hidden_size': 16, 'w_rank': None, 'u_rank': 3}
  fixed = tcn.with_fixed(padding='causal').model_kwargs(p)
  assert fixed['padding'] == 'causal'


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match='Unknown search space'):
    spaces.get_space('transformer')
  space = spaces.get_space('protonn')
  p = space.sample(1, seed=0)[0]
  with pytest.raises(ValueError, match='outside'):
    space.to_point({**p, 'num_prototypes': 10_000})
  with pytest.raises(ValueError, match='lack'):
    space.to_point({'gamma': 1.0})
