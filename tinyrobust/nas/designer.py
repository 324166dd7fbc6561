"""GP designer over a `SearchSpace`: `suggest(n)` / `update(trials)`.

`GPDesigner` wraps `skopt.Optimizer(base_estimator='GP', acq_func='LCB',
acq_func_kwargs={'kappa': kappa}, acq_optimizer='sampling')`: the study's
UCB `mu + sqrt(beta) sigma` in minimisation form `mu - kappa sigma`, optimised
by Monte-Carlo sampling of the space as in the study.

Random scalarization. Trials keep their five objective terms separately
(`objective.TERMS`); nothing is scalarized at record time. For *each*
suggestion the designer draws weights `lambda ~ U(ranges)` (from an RNG seeded
by `(seed, suggestion index)`, so a resumed search draws the same weights),
builds a fresh `skopt.Optimizer`, tells it every finished trial scalarized
under that `lambda`, and asks for one point. A batch of n suggestions thus
optimises n different trade-offs and spreads over the Pareto front.
Refitting per suggestion costs one GP fit on at most a few hundred points,
negligible beside training a candidate.

What the GP is told:
* ok trials: `sum_k lambda_k term_k`;
* infeasible and failed trials (and ok trials whose score is not finite):
  a penalty `worst + margin * max(range, 1e-3)` over the finite scores under
  the same `lambda` (`range` = max - min; 1.0 when fewer than two finite
  scores). A fixed huge constant would, after the GP's y-normalisation, flatten
  every difference between feasible candidates; a penalty one observed range
  above the worst keeps them while steering the search away;
* suggestions still in flight (earlier members of the same batch, or
  re-submitted pending trials): a constant liar (`liar='cl_max'`: the worst
  finite score) so the batch does not pile onto one point.

Until `n_initial_points` trials have finished, suggestions are uniformly
random (repaired) points. Every suggestion is passed through
`space.repair`, and the repaired point is what is evaluated and told.

`RandomDesigner` has the same interface (the baseline of the tests).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence
import warnings

import numpy as np
import skopt
import threadpoolctl

from tinyrobust import registry
from tinyrobust.nas import objective as objective_lib
from tinyrobust.nas import spaces as spaces_lib

LIARS = ('cl_max', 'cl_min', 'cl_mean')


class RandomDesigner:
  """Uniform random search with the designer interface."""

  def __init__(self, space: spaces_lib.SearchSpace, *, seed: int = 0,
               weight_ranges: Mapping[str, tuple[float, float]] | None = None,
               start_index: int = 0):
    self.space = space
    self.seed = int(seed)
    self.ranges = dict(weight_ranges) if weight_ranges else None
    self.next_index = int(start_index)
    self.observations: dict[int, dict[str, Any]] = {}
    self.pending: dict[int, dict[str, Any]] = {}
    self.last_ids: list[int] = []
    self.last_weights: list[dict[str, float] | None] = []

  def _rng(self, index: int) -> np.random.Generator:
    return np.random.default_rng([self.seed, index])

  def _weights(self, rng) -> dict[str, float] | None:
    return objective_lib.draw_weights(self.ranges, rng) if self.ranges else None

  def _propose(self, index: int, weights, rng) -> dict[str, Any]:
    del weights
    return self._random_point(rng)

  def _random_point(self, rng: np.random.Generator) -> dict[str, Any]:
    return self.space.sample(1, seed=int(rng.integers(2**31 - 1)))[0]

  def suggest(self, n: int = 1) -> list[dict[str, Any]]:
    """Returns `n` parameter dicts; ids in `last_ids`, weights in
    `last_weights` (the scalarization each was proposed under)."""
    if int(n) < 1:
      raise ValueError(f'suggest(n) needs n >= 1, got {n}.')
    out, self.last_ids, self.last_weights = [], [], []
    for _ in range(int(n)):
      index = self.next_index
      rng = self._rng(index)
      weights = self._weights(rng)
      params = self._propose(index, weights, rng)
      self.next_index += 1
      self.pending[index] = params
      out.append(params)
      self.last_ids.append(index)
      self.last_weights.append(weights)
    return out

  def add_pending(self, index: int, params: Mapping[str, Any]) -> None:
    """Registers an in-flight candidate (e.g. re-submitted after a resume)."""
    self.pending[int(index)] = dict(params)
    self.next_index = max(self.next_index, int(index) + 1)

  def update(self, trials: Sequence[Mapping[str, Any]]) -> None:
    """Adds finished trials (journal result records: trial, params, status,
    terms)."""
    for t in trials:
      if 'trial' not in t or 'params' not in t or 'status' not in t:
        raise ValueError('A trial needs "trial", "params" and "status", got '
                         f'keys {sorted(t)}.')
      index = int(t['trial'])
      self.pending.pop(index, None)
      self.observations[index] = {'params': dict(t['params']),
                                  'status': t['status'],
                                  'terms': dict(t.get('terms') or {})}
      self.next_index = max(self.next_index, index + 1)


class GPDesigner(RandomDesigner):
  """GP + LCB designer with random scalarization (see module docstring)."""

  def __init__(self, space: spaces_lib.SearchSpace, *,
               weight_ranges: Mapping[str, tuple[float, float]],
               kappa: float = 1.96, n_initial_points: int = 5, seed: int = 0,
               n_acq_points: int = 2000, penalty_margin: float = 1.0,
               liar: str = 'cl_max', start_index: int = 0):
    if not kappa >= 0:
      raise ValueError(f'kappa must be >= 0, got {kappa}.')
    if int(n_initial_points) < 1:
      raise ValueError(f'n_initial_points must be >= 1, got '
                       f'{n_initial_points}.')
    if liar not in LIARS:
      raise ValueError(f'Unknown liar {liar!r}. Valid: {LIARS}.')
    if not penalty_margin > 0:
      raise ValueError(f'penalty_margin must be > 0, got {penalty_margin}.')
    super().__init__(space, seed=seed, weight_ranges=weight_ranges,
                     start_index=start_index)
    self.kappa = float(kappa)
    self.n_initial_points = int(n_initial_points)
    self.n_acq_points = int(n_acq_points)
    self.penalty_margin = float(penalty_margin)
    self.liar = liar

  def scores(self, weights: Mapping[str, float]) -> tuple[list[list[Any]],
                                                          list[float]]:
    """Points and GP targets of the finished trials under `weights`."""
    idx = sorted(self.observations)
    raw = []
    for i in idx:
      o = self.observations[i]
      s = (objective_lib.scalarize(o['terms'], weights)
           if o['status'] == 'ok' else math.nan)
      raw.append(s)
    finite = [s for s in raw if math.isfinite(s)]
    worst = max(finite) if finite else 0.0
    spread = (max(finite) - min(finite)) if len(finite) > 1 else 1.0
    penalty = worst + self.penalty_margin * max(spread, 1e-3)
    ys = [s if math.isfinite(s) else penalty for s in raw]
    pts = [self.space.to_point(self.observations[i]['params']) for i in idx]
    return pts, ys

  def _lie(self, ys: list[float]) -> float:
    return {'cl_max': max, 'cl_min': min,
            'cl_mean': lambda v: float(np.mean(v))}[self.liar](ys)

  def _propose(self, index: int, weights, rng) -> dict[str, Any]:
    if len(self.observations) < self.n_initial_points:
      return self._random_point(rng)
    pts, ys = self.scores(weights)
    lie = self._lie(ys)
    for params in self.pending.values():
      pts.append(self.space.to_point(params))
      ys.append(lie)
    opt = skopt.Optimizer(
        self.space.skopt_dimensions(), base_estimator='GP', acq_func='LCB',
        acq_func_kwargs={'kappa': self.kappa}, acq_optimizer='sampling',
        acq_optimizer_kwargs={'n_points': self.n_acq_points},
        n_initial_points=1, random_state=int(rng.integers(2**31 - 1)))
    # One BLAS thread: the GP's small matrices run ~5x slower when BLAS threads
    # fight over shared cores. Repeated points / flat targets make sklearn
    # warn about convergence; those warnings are noise here.
    with warnings.catch_warnings(), threadpoolctl.threadpool_limits(1):
      warnings.simplefilter('ignore')
      opt.tell(pts, ys)
      point = opt.ask()
    return self.space.repair(self.space.to_params(point))


DESIGNERS = registry.Registry('designer')
DESIGNERS.register('gp', obj=GPDesigner)
DESIGNERS.register('random', obj=RandomDesigner)


def make_designer(kind: str, space: spaces_lib.SearchSpace, **kwargs):
  """`'gp'` -> `GPDesigner(space, **kwargs)`; `'random'` -> `RandomDesigner`
  (the GP-only options are dropped)."""
  cls = DESIGNERS.lookup(kind)
  accepted = registry.option_names(cls.__init__)
  return cls(space, **{k: v for k, v in kwargs.items()
                       if accepted is None or k in accepted})
