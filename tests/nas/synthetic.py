"""Cheap analytic candidates with known optima, for testing designers.

`QuadraticBowl` stands in for "train a candidate": a mixed real/integer space
whose error term is a shifted quadratic with a known minimum (0 at
`optimum`), and whose flash / SRAM terms grow with one integer dimension so
that a budget makes part of the space infeasible. Its `__call__(params,
trial)` follows the `evaluate_fn` contract of `run_search`, and it is a
module-level class so process pools and Ray can ship it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

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
