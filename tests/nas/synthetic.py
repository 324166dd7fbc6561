"""Cheap analytic candidates with known optima, for testing designers.

`QuadraticBowl` stands in for "train a candidate": a mixed real/integer space
whose error term is a shifted quadratic with a known minimum (0 at
`optimum`), and whose flash / SRAM terms grow with one integer dimension so
that a budget makes part of the space infeasible. Its `__call__(params,
trial)` follows the `evaluate_fn` contract of `run_search`, and it is a
module-level class so process pools and Ray can ship it.

The tests' two tiny search configs live here too: `bowl_config` (the
analytic bowl, no training) and `mlp_search_config` (real MLP candidates
trained on a built-in dataset, a few epochs and trials).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections
from skopt import space as sk

from tinyrobust.nas import objective as objective_lib
from tinyrobust.nas import spaces as spaces_lib


@dataclasses.dataclass(frozen=True)
class QuadraticBowl:
  """f = sum_i (x_i - a_i)^2 + ((k - k0) / k_scale)^2 on [-5, 5]^d x [0, 20].

  Attributes:
    optimum: `(a_1 .. a_d, k0)`, the minimiser (f = 0 there).
    k_scale: scale of the integer dimension.
    bytes_per_k: flash and SRAM bytes per unit of `k` (cost model).
    flash_max, sram_max: the board budget the costs are checked against.
  """
  optimum: tuple[float, ...] = (1.0, -2.0, 0.5, 13)
  k_scale: float = 4.0
  bytes_per_k: float = 1000.0
  flash_max: float = 1e9
  sram_max: float = 1e9

  def space(self) -> spaces_lib.SearchSpace:
    dims = [sk.Real(-5.0, 5.0, name=f'x{i}')
            for i in range(len(self.optimum) - 1)]
    dims.append(sk.Integer(0, 20, name='k'))
    return spaces_lib.SearchSpace('quadratic_bowl', 'none', tuple(dims))

  def value(self, params: dict[str, Any]) -> float:
    *a, k0 = self.optimum
    f = sum((float(params[f'x{i}']) - ai) ** 2 for i, ai in enumerate(a))
    return f + ((int(params['k']) - k0) / self.k_scale) ** 2

  def __call__(self, params: dict[str, Any], trial: int) -> dict[str, Any]:
    del trial
    size = self.bytes_per_k * (1 + int(params['k']))
    terms = objective_lib.terms(
        val_accuracy=None, flash_bytes=size, sram_bytes=size, flops=0.0,
        fgsm_consistency=None, flash_max=self.flash_max,
        sram_max=self.sram_max)
    if not objective_lib.feasible(terms):
      return {'status': 'infeasible', 'terms': terms,
              'metrics': {'flash_bytes': size, 'sram_bytes': size}}
    f = self.value(params)
    terms['error'] = f
    terms['adversarial_error'] = 0.0
    return {'status': 'ok', 'terms': terms,
            'metrics': {'value': f, 'flash_bytes': size, 'sram_bytes': size}}


ERROR_ONLY = {'error': 1.0, 'flash': 0.0, 'sram': 0.0, 'latency': 0.0,
              'adversarial': 0.0}


def bowl_config(**search_overrides) -> ml_collections.ConfigDict:
  """A search config for `QuadraticBowl` candidates (`evaluate_fn`):
  error-only weights, 3 initial points, 8 trials in batches of 2."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = ml_collections.ConfigDict({'name': 'synthetic', 'options': {}})
  c.model = ml_collections.ConfigDict({'name': 'bowl', 'kwargs': {}})
  c.train = ml_collections.ConfigDict({'epochs': 1})
  c.search = ml_collections.ConfigDict({
      'weights': dict(ERROR_ONLY), 'weight_spread': 0.0,
      'n_initial_points': 3, 'n_acq_points': 300, 'num_trials': 8,
      'batch_size': 2, 'board': ''})
  c.search.update(search_overrides)
  return c


def mlp_search_config(*, data=None, train=None, attack=None,
                      **search_overrides) -> ml_collections.ConfigDict:
  """A search of real MLP candidates (`space='mlp'`, float32, param-byte
  flash proxy, no final retrain): 2 trials of 1 epoch on `basic_motions`,
  FGSM at eps 0.1; `data`, `train`, `attack` and the search fields
  override single entries."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = ml_collections.ConfigDict(data or {
      'name': 'basic_motions', 'options': {'seed': 0}, 'augment': 'none'})
  c.model = ml_collections.ConfigDict({'name': 'mlp', 'kwargs': {}})
  c.train = ml_collections.ConfigDict({
      'epochs': 2, 'batch_size': 16, 'learning_rate': 3e-3,
      'progress_bar': False, **(train or {})})
  c.search = ml_collections.ConfigDict({
      'space': 'mlp', 'board': '', 'flash_max_bytes': 400e3,
      'sram_max_bytes': 64e3, 'flash_proxy': 'param_bytes',
      'sram_gate': 'study', 'precision': 'float32', 'num_trials': 2,
      'n_initial_points': 2, 'trial_epochs': 1, 'final_retrain': False,
      'precompile_attacks': False, **search_overrides})
  c.attack = ml_collections.ConfigDict({
      'attacks': ['fgsm'], 'eps_grid': [0.1], **(attack or {})})
  return c
