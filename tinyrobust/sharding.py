"""Data parallelism: a 1-D device mesh with the batch axis sharded over it.

Works unchanged on CPU (one or fake devices), GPU and TPU: `jit` with
`NamedSharding` inputs partitions the computation; no pmap.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

BATCH_AXIS = 'batch'


def default_devices() -> list:
  """The devices a mesh spans by default: all visible accelerators; on the
  CPU backend only the first device.

  A CPU split into devices (`tinyrobust.cpu_devices`) is used by the
  evaluation scheduler as independent per-device programs
  (`evaluation.workers`); SPMD programs with collectives over CPU devices
  can deadlock XLA:CPU's thread pool on few cores, so training and the
  other evaluators stay on one CPU device unless given `devices`.
  """
  devices = jax.devices()
  return devices[:1] if devices[0].platform == 'cpu' else devices


def batch_mesh(devices=None) -> Mesh:
  """A 1-D mesh over `devices` (default: `default_devices()`)."""
  devices = default_devices() if devices is None else devices
  return Mesh(np.asarray(devices), (BATCH_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding that splits the leading (batch) axis over the mesh."""
  return NamedSharding(mesh, P(BATCH_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def pad_to_multiple(x: np.ndarray, multiple: int) -> tuple[np.ndarray, int]:
  """Pads axis 0 by repeating the last row; returns (padded, n_valid)."""
  n = x.shape[0]
  pad = (-n) % multiple
  if pad:
    x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)], axis=0)
  return x, n


def shard_batch(x: np.ndarray, mesh: Mesh) -> jax.Array:
  """Places a host batch (leading axis divisible by mesh size) on the mesh."""
  return jax.device_put(x, batch_sharding(mesh))


def step_batch_size(batch_size: int, n: int, mesh: Mesh) -> int:
  """The per-step batch: `batch_size` capped at the data size, rounded up to
  a multiple of the mesh size.

  Capping keeps a small evaluation from padding 40 examples to 4096; the
  cap is rounded up to a power of two so that datasets of similar size share
  one compiled shape.
  """
  n_dev = mesh.size
  cap = 1 << max(0, math.ceil(math.log2(max(n, 1))))
  step = min(int(batch_size), cap)
  return int(math.ceil(step / n_dev) * n_dev)


def padded_batches(arrays: Sequence[np.ndarray], batch_size: int,
                   mesh: Mesh) -> Iterator[tuple[int, list[jax.Array], int]]:
  """Yields `(batch_index, sharded_arrays, n_valid)` over aligned arrays.

  Every batch has exactly `step_batch_size(batch_size, n, mesh)` rows (the
  last one padded by repeating its last row), so each consumer compiles
  once; only the first `n_valid` rows of a batch are real. The one batching
  loop of clean evaluation, robustness evaluation and the search.
  """
  n = len(arrays[0])
  if any(len(a) != n for a in arrays):
    raise ValueError(f'arrays must share their leading axis, got lengths '
                     f'{[len(a) for a in arrays]}.')
  step = step_batch_size(batch_size, n, mesh)
  for b_idx, lo in enumerate(range(0, n, step)):
    padded = [pad_to_multiple(np.asarray(a[lo:lo + step]), step)[0]
              for a in arrays]
    yield b_idx, [shard_batch(a, mesh) for a in padded], min(step, n - lo)
