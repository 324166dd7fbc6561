"""Adversarial inputs exactly as the white-box evaluator's engines craft them.

A transfer evaluation needs the adversarial inputs themselves, not only the
source model's counts; for its diagonal (target = source) to equal the
white-box evaluation, they must be the very inputs the evaluator judged.
`craft` returns `x_adv [E, N, ...]` for one attack on one (source) model
with either engine of `tinyrobust.evaluation.robustness`:

* 'sweep': batches of `S = sharding.step_batch_size(batch_size, N, mesh)`
  examples (the last padded), every eps at once (`vmap`), batch `b` with key
  `fold_in(fold_in(key(seed), attack_index), b)` (`RobustnessEvaluator`'s
  sweep engine and its `craft`).
* 'scheduler': `tinyrobust.evaluation.scheduler.Scheduler` itself runs the
  attack (eps ascending, only the points still open, compacted buckets, its
  own key rule `fold_in(fold_in(fold_in(key(seed), attack_index), k *
  n_stages + s), b)`); every kernel output is recorded. At eps e a point's
  input is its witness (the first output that changed the source's
  prediction, found at eps <= e; it lies in every larger ball of the same
  norm), else the attack's last output at eps e (which did not change it),
  else `x` (eps = 0, or points settled before any attack: a non-finite clean
  output, and for a cascade the clean misclassifications, as AutoAttack).
  So on the source these inputs give the scheduler's per-example
  worst-case robust and consistent flags.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tinyrobust import sharding
from tinyrobust.evaluation import scheduler as scheduler_lib

ENGINES = ('scheduler', 'sweep')


def _sweep(attack, variables, x, y, grid, *, seed, attack_index, batch_size,
           mesh) -> np.ndarray:
  rep, batch = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  grid_batch = jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(None, sharding.BATCH_AXIS))
  sweep = jax.vmap(attack, in_axes=(None, None, None, None, 0))

  def fn(variables, xb, yb, key, g):
    out = sweep(variables, xb, yb, key, g)
    return out[0] if isinstance(out, tuple) else out

  craft = jax.jit(fn, in_shardings=(rep, batch, batch, rep, rep),
                  out_shardings=grid_batch)
  variables = jax.device_put(variables, rep)
  g = jax.device_put(jnp.asarray(grid, x.dtype), rep)
  root = jax.random.key(int(seed))
  parts = []
  for b, (xb, yb), n in sharding.padded_batches((x, y), batch_size, mesh):
    key = jax.random.fold_in(jax.random.fold_in(root, attack_index), b)
    parts.append(np.asarray(craft(variables, xb, yb, key, g))[:, :n])
  return np.concatenate(parts, axis=1)


class _Recorder(scheduler_lib.Scheduler):
  """The scheduler, keeping every kernel output it judges (see module)."""

  def __init__(self, *args, attack_index: int, x: np.ndarray, **kwargs):
    super().__init__(*args, **kwargs)
    self._attack_index = attack_index
    n_eps = len(self.eps_grid)
    self.x_adv = np.broadcast_to(x, (n_eps,) + x.shape).copy()
    self.witness_rank = np.full(len(x), np.iinfo(np.int64).max)
    self._rank = np.empty(n_eps, np.int64)
    self._rank[self._order] = np.arange(n_eps)
    self._clean_pred = None

  def _clean(self, variables, x, y):
    out = super()._clean(variables, x, y)
    self._clean_pred = out[0]
    return out

  def _run_attack(self, a_idx, *args, **kwargs):
    del a_idx  # the caller's position of this attack in its own list
    return super()._run_attack(self._attack_index, *args, **kwargs)

  def _attack_bucket(self, kernel, variables, x, y, bidx, key, eps,
                     shares):
    seen = {}  # device -> that device's share of the kernel output

    def spy(*args):
      out = kernel(*args)
      adv = out[0] if isinstance(out, tuple) else out
      seen[next(iter(adv.devices()))] = adv
      return out

    pred, fin = super()._attack_bucket(spy, variables, x, y, bidx, key, eps,
                                       shares)
    outs = (list(seen.values()) if shares == 1 else
            [seen[d] for d in self.workers.devices[:shares]])
    # Padding repeats a bucket's first index: keep first occurrences only.
    idx, rows = np.unique(bidx, return_index=True)
    x_adv = np.concatenate([np.asarray(o) for o in outs])[rows]
    broken = ~fin[rows] | (pred[rows] != self._clean_pred[idx])
    for e in np.flatnonzero(self.eps_grid == eps):
      k = self._rank[e]
      fresh = self.witness_rank[idx] > k  # not yet decided: judged here
      self.x_adv[e, idx[fresh]] = x_adv[fresh]
      new = fresh & broken
      self.witness_rank[idx[new]] = k
      # The witness stands in at every larger eps of the grid.
      for e2 in np.flatnonzero(self._rank > k):
        self.x_adv[e2, idx[new]] = x_adv[new]
    return pred, fin


def craft(apply_fn: Callable, variables: Any, attack, x: np.ndarray,
          y: np.ndarray, *, eps_grid: Sequence[float], seed: int,
          batch_size: int, attack_index: int = 0, engine: str = 'scheduler',
          devices: Sequence[jax.Device] | None = None) -> np.ndarray:
  """`x_adv [E, N, ...]` of `attack` on `(apply_fn, variables)`.

  Args:
    apply_fn, variables: the (source) model, in eval mode.
    attack: an `Attack` record built for `apply_fn`.
    x: `[N, ...]` float inputs; y: `[N]` int labels (validated already).
    eps_grid: `[E]` radii (input units).
    seed, batch_size: as for the evaluator (they set batches and keys).
    attack_index: the attack's position in the evaluator's attack list.
    engine: 'scheduler' or 'sweep' (module docstring).
    devices: devices to shard over (default: `sharding.default_devices()`).
  """
  if engine not in ENGINES:
    raise ValueError(f'Unknown engine {engine!r}. Valid: '
                     f'{", ".join(ENGINES)}.')
  y = np.asarray(y, np.int32)
  grid = np.asarray(eps_grid, np.float64)
  if engine == 'sweep':
    return _sweep(attack, variables, x, y, grid, seed=seed,
                  attack_index=attack_index, batch_size=batch_size,
                  mesh=sharding.batch_mesh(devices))
  rec = _Recorder(apply_fn, {attack.name: attack}, grid,
                  batch_size=batch_size, devices=devices,
                  attack_index=int(attack_index), x=np.asarray(x))
  rec.run(variables, x, y, seed=seed)
  return rec.x_adv
