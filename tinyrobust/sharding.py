"""Data parallelism: a 1-D device mesh with the batch axis sharded over it.

Works unchanged on CPU (one or fake devices), GPU and TPU: `jit` with
`NamedSharding` inputs partitions the computation; no pmap.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

BATCH_AXIS = 'batch'


def batch_mesh(devices=None) -> Mesh:
  """A 1-D mesh over `devices` (default: all visible devices)."""
  devices = jax.devices() if devices is None else devices
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
