"""Search spaces as data: scikit-optimize dimensions + a map to model kwargs.

A `SearchSpace` lists named `skopt.space` dimensions, the registered model
they parameterise, and two plain functions:

* `repair(params) -> params` makes a raw point valid (the GP proposes points
  in the box; structural constraints such as "3..8 dilations" are enforced
  here, and the *repaired* point is what gets evaluated and told to the GP);
* `to_kwargs(params) -> dict` turns a point into `get_model(name, **kwargs)`
  keyword arguments (merged over `fixed`, e.g. the input shape).

Conditional and subset choices are encoded explicitly, never as free-form
lists, so the GP sees a fixed-length numeric vector:

* TCN dilations (any subset of {1, 2, 4, ..., 256} with 3..8 members, as in
  the study): nine binary flags `dil_1 ... dil_256`. `repair` adds the
  smallest absent dilations while fewer than 3 are on and drops the largest
  present ones while more than 8 are on (small dilations first keeps the
  receptive field, hence latency and SRAM, modest).
* "Optional" integers (FastGRNN low-rank factors): `0` means "off" (full
  rank), `r >= 1` the rank; the map to `None` happens in `to_kwargs`.
* Booleans are `Integer(0, 1)` so the GP treats them as ordinal.

`SPACES` maps names to factories; `get_space(name)` builds one. Users can
pass their own `SearchSpace` to `run_search`.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from skopt import space as sk

from tinyrobust import registry

TCN_DILATIONS = tuple(2 ** i for i in range(9))  # 1 .. 256
TCN_MIN_DILATIONS, TCN_MAX_DILATIONS = 3, 8


def _identity(params: dict[str, Any]) -> dict[str, Any]:
  return dict(params)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """A named box of skopt dimensions over one registered model.

  Attributes:
    name: space name (e.g. 'tcn').
    model: registered model name the points parameterise.
    dimensions: named `skopt.space` dimensions (Integer / Real / Categorical).
    to_kwargs: `params -> model kwargs` (before merging `fixed`).
    repair: `params -> params` projecting a box point onto the valid set.
    fixed: model kwargs held constant (merged under the point's kwargs).
  """
  name: str
  model: str
  dimensions: tuple[sk.Dimension, ...]
  to_kwargs: Callable[[dict[str, Any]], dict[str, Any]] = _identity
  repair: Callable[[dict[str, Any]], dict[str, Any]] = _identity
  fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    names = [d.name for d in self.dimensions]
    if any(not n for n in names) or len(set(names)) != len(names):
      raise ValueError(f'Every dimension needs a unique name, got {names}.')

  @property
  def names(self) -> list[str]:
    return [d.name for d in self.dimensions]

  def skopt_dimensions(self) -> list[sk.Dimension]:
    """Fresh copies: `skopt.Optimizer` mutates its dimensions' transforms,
    which would otherwise change how later `sample` calls draw points."""
    return copy.deepcopy(list(self.dimensions))

  def skopt_space(self) -> sk.Space:
    return sk.Space(self.skopt_dimensions())

  def to_point(self, params: Mapping[str, Any]) -> list[Any]:
    """Dict -> skopt point (list in dimension order), validated."""
    missing = [n for n in self.names if n not in params]
    if missing:
      raise ValueError(f'params {dict(params)} lack dimension(s) {missing} of '
                       f'space {self.name!r}.')
    point = [_native(params[n]) for n in self.names]
    for d, v in zip(self.dimensions, point):
      if v not in d:
        raise ValueError(f'Value {v!r} of {d.name!r} is outside {d}.')
    return point

  def to_params(self, point: Sequence[Any]) -> dict[str, Any]:
    """skopt point -> dict with Python scalars."""
    return {n: _native(v) for n, v in zip(self.names, point)}

  def sample(self, n: int, seed: int) -> list[dict[str, Any]]:
    """`n` uniformly random (repaired) points."""
    pts = self.skopt_space().rvs(n_samples=n, random_state=seed)
    return [self.repair(self.to_params(p)) for p in pts]

  def model_kwargs(self, params: Mapping[str, Any]) -> dict[str, Any]:
    return {**dict(self.fixed), **self.to_kwargs(dict(params))}

  def with_fixed(self, **fixed) -> 'SearchSpace':
    return dataclasses.replace(self, fixed={**dict(self.fixed), **fixed})


def _native(v):
  if isinstance(v, np.generic):
    return v.item()
  return v


# --- TCN (study: filters 2..63, kernel 2..15, skip on/off, dilations) -----


def _dil_name(d: int) -> str:
  return f'dil_{d}'


def repair_tcn(params: dict[str, Any]) -> dict[str, Any]:
  """Forces 3..8 dilation flags on (see module docstring)."""
  p = dict(params)
  on = [d for d in TCN_DILATIONS if int(p[_dil_name(d)])]
  for d in TCN_DILATIONS:
    if len(on) >= TCN_MIN_DILATIONS:
      break
    if d not in on:
      on.append(d)
  on = sorted(on)[:TCN_MAX_DILATIONS]
  for d in TCN_DILATIONS:
    p[_dil_name(d)] = int(d in on)
  return p


def _tcn_kwargs(p: dict[str, Any]) -> dict[str, Any]:
  return {'nb_filters': int(p['nb_filters']),
          'kernel_size': int(p['kernel_size']),
          'use_skip_connections': bool(p['use_skip_connections']),
          'dilations': [d for d in TCN_DILATIONS if int(p[_dil_name(d)])]}


def tcn_space(max_filters: int = 63, max_kernel: int = 15) -> SearchSpace:
  """The study's TCN space; `max_*` shrink it (e.g. for quick CPU runs)."""
  if not 2 <= int(max_filters) <= 63 or not 2 <= int(max_kernel) <= 15:
    raise ValueError(f'tcn space needs 2 <= max_filters <= 63 and 2 <= '
                     f'max_kernel <= 15, got {max_filters}, {max_kernel}.')
  dims = [sk.Integer(2, int(max_filters), name='nb_filters'),
          sk.Integer(2, int(max_kernel), name='kernel_size'),
          sk.Integer(0, 1, name='use_skip_connections')]
  dims += [sk.Integer(0, 1, name=_dil_name(d)) for d in TCN_DILATIONS]
  return SearchSpace('tcn', 'tcn', tuple(dims), _tcn_kwargs, repair_tcn)


# --- ProtoNN / Bonsai (EdgeML hyper-parameters) ---------------------------


def _protonn_kwargs(p: dict[str, Any]) -> dict[str, Any]:
  return {'projection_dim': int(p['projection_dim']),
          'num_prototypes': int(p['num_prototypes']),
          'gamma': float(p['gamma']), 'density_w': float(p['density_w'])}


def protonn_space() -> SearchSpace:
  dims = (sk.Integer(2, 20, name='projection_dim'),
          sk.Integer(5, 100, name='num_prototypes'),
          sk.Real(1e-2, 10.0, prior='log-uniform', name='gamma'),
          sk.Real(0.2, 1.0, name='density_w'))
  return SearchSpace('protonn', 'protonn', dims, _protonn_kwargs)


def _bonsai_kwargs(p: dict[str, Any]) -> dict[str, Any]:
  return {'depth': int(p['depth']), 'projection_dim': int(p['projection_dim']),
          'sigma': float(p['sigma']), 'density_z': float(p['density_z'])}


def bonsai_space() -> SearchSpace:
  dims = (sk.Integer(0, 4, name='depth'),
          sk.Integer(2, 20, name='projection_dim'),
          sk.Real(0.1, 10.0, prior='log-uniform', name='sigma'),
          sk.Real(0.2, 1.0, name='density_z'))
  return SearchSpace('bonsai', 'bonsai', dims, _bonsai_kwargs)


# --- FastGRNN (rank 0 = full rank) and DS-CNN ------------------------------


def _fastgrnn_kwargs(p: dict[str, Any]) -> dict[str, Any]:
  return {'hidden_size': int(p['hidden_size']),
          'w_rank': int(p['w_rank']) or None,
          'u_rank': int(p['u_rank']) or None}


def fastgrnn_space() -> SearchSpace:
  dims = (sk.Integer(4, 64, name='hidden_size'),
          sk.Integer(0, 8, name='w_rank'),
          sk.Integer(0, 8, name='u_rank'))
  return SearchSpace('fastgrnn', 'fastgrnn', dims, _fastgrnn_kwargs)


def _dscnn_kwargs(p: dict[str, Any]) -> dict[str, Any]:
  return {'filters': int(p['filters']), 'num_blocks': int(p['num_blocks'])}


def dscnn_space() -> SearchSpace:
  dims = (sk.Integer(8, 128, name='filters'),
          sk.Integer(1, 6, name='num_blocks'))
  return SearchSpace('dscnn', 'dscnn', dims, _dscnn_kwargs)


# --- Small reference spaces (built-in models; smoke tests) -----------------


def _mlp_kwargs(p: dict[str, Any]) -> dict[str, Any]:
  return {'hidden': [int(p['hidden_1'])] + ([int(p['hidden_2'])]
                                            if int(p['hidden_2']) else [])}


def mlp_space() -> SearchSpace:
  """Two hidden layers; `hidden_2 = 0` drops the second one."""
  dims = (sk.Integer(4, 256, name='hidden_1'),
          sk.Integer(0, 128, name='hidden_2'))
  return SearchSpace('mlp', 'mlp', dims, _mlp_kwargs)


def _cnn_kwargs(p: dict[str, Any]) -> dict[str, Any]:
  return {'features': [int(p['features_1']), int(p['features_2'])],
          'kernel_size': int(p['kernel_size'])}


def cnn_space() -> SearchSpace:
  dims = (sk.Integer(4, 64, name='features_1'),
          sk.Integer(4, 64, name='features_2'),
          sk.Integer(2, 9, name='kernel_size'))
  return SearchSpace('cnn', 'cnn', dims, _cnn_kwargs)


SPACES = registry.Registry('search space')
for _name, _factory in (('tcn', tcn_space), ('protonn', protonn_space),
                        ('bonsai', bonsai_space), ('fastgrnn', fastgrnn_space),
                        ('dscnn', dscnn_space), ('mlp', mlp_space),
                        ('cnn', cnn_space)):
  SPACES.register(_name, obj=_factory)


def get_space(name: str, **options) -> SearchSpace:
  """Builds the registered space `name` (one of `SPACES`).

  `options` go to the factory (only `tcn` takes any: `max_filters`,
  `max_kernel`).
  """
  return SPACES.get(name, **options)
