"""An attack's passes (targets x restarts) stacked into one batch.

APGD-T and FAB-T run one pass per target class (AutoAttack: the 9 classes
after the top one on the clean input), each a full run of `steps` steps.
Where the evaluation scheduler meets them, in a cascade's later stages, the
batch is the few points no earlier stage broke: a handful of rows per
device, where each step pays the host loop's overhead for little work.
So with host-driven steps the kernels run a few passes side by side: pass
p of example b becomes row `p * B + b` of one batch of at most `ROWS` rows
(`groups`). Every example is treated on its
own, and each row keeps its pass's random start and target, so a row's
trajectory is the one its pass would have taken alone; the passes are then
merged in pass order exactly as one after another (first success, else the
pass the kernel's rule prefers). Outside the scheduler the output is the
sequential one (up to float rounding of a larger batch); inside
`loops.retire_as` all rows of an example stop once any of them breaks it
(`same_example_any`), so whether an example is broken does not change, only
which pass's example is returned may.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

# Rows one stacked call may hold (passes x examples). Measured on the 2-core
# CPU: one ResNet8 input gradient costs about the same per row from 7 to 256
# rows (1.6-2.3 ms, best of 15 per size), so stacking saves only
# the per-step overhead. The AutoAttack cascade on ResNet8 (100 images,
# 2/255, 2 devices, 13-14 points left per stage, issue 22's closing note,
# two interleaved rounds, run seconds one pass at a time / stacked): with
# at most 21 rows per call APGD-T 17.9, 14.4 / 12.9, 13.1 and FAB-T 23.3,
# 21.5 / 18.4, 21.7; with 64 rows APGD-T 17.8, 16.3 / 16.4, 13.8 but FAB-T
# 22.5, 23.9 / 30.8, 29.3 (its projection over many rows leaves the cache).
ROWS = 32


def pass_targets(logits: jax.Array, y: jax.Array, *, targeted: bool,
                 n_target_classes: int, restarts: int) -> jax.Array:
  """`[P, B]` per-pass targets: targeted, the 2nd .. (n+1)-th most likely
  classes on the clean input (n = `n_target_classes`, capped at K - 1),
  each `restarts` times in a row; untargeted, y `restarts` times."""
  if not targeted:
    return jnp.broadcast_to(y, (restarts,) + y.shape)
  n = min(n_target_classes, logits.shape[-1] - 1)
  order = jnp.argsort(-logits, axis=-1).astype(y.dtype)   # [B, K]
  ranks = np.repeat(np.arange(1, n + 1), restarts)         # [P]
  return order[:, ranks].T


def groups(n_passes: int, batch: int,
           rows: int | None = None) -> list[tuple[int, int]]:
  """Consecutive pass ranges `[lo, hi)` run together: as few groups as
  keep `(hi - lo) * batch <= rows` (at least one pass each), of balanced
  sizes. `rows` defaults to `ROWS`."""
  rows = ROWS if rows is None else rows
  most = max(1, min(n_passes, rows // max(batch, 1)))
  size = math.ceil(n_passes / math.ceil(n_passes / most))
  return [(lo, min(lo + size, n_passes))
          for lo in range(0, n_passes, size)]


def stack(tree, n: int):
  """Every leaf repeated n times along its batch axis (`[n * B, ...]`)."""
  return jax.tree.map(
      lambda a: jnp.tile(a, (n,) + (1,) * (a.ndim - 1)), tree)


def part(tree, p: int, batch: int):
  """Pass p's rows `[p * batch, (p + 1) * batch)` of every leaf."""
  return jax.tree.map(lambda a: a[p * batch:(p + 1) * batch], tree)


def example_ids(n: int, batch: int) -> jax.Array:
  """`[n * batch]` int32: the example each stacked row belongs to."""
  return jnp.tile(jnp.arange(batch, dtype=jnp.int32), n)


def same_example_any(example: jax.Array, hit: jax.Array) -> jax.Array:
  """Per row: does any row of the same example have `hit`? (`[R]` ids and
  flags; a pairwise test, so any subset of rows, retired or padded, works.)"""
  same = example[:, None] == example[None, :]
  return jnp.any(same & hit[None, :], axis=1)
