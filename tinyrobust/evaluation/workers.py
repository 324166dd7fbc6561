"""Independent per-device programs for the scheduler on a multi-device CPU.

On GPU/TPU the scheduler shards a bucket over a device mesh and runs one
SPMD program. On a CPU host split into several devices
(`tinyrobust.cpu_devices`) it runs each device's share of the bucket as its
own single-device program instead, one Python thread per device: the
programs hold no collectives. XLA:CPU runs a program's collectives on its
intra-op thread pool, one thread per core; when one device's program blocks
every pool thread in collectives that wait for the other device, the other
device never runs and the process aborts after 40 s (seen on 2 cores with
FAB-T's step: an all-to-all). Per-device programs cannot deadlock that way.

Only long stages are split (`Scheduler._shares`: `LONG_STAGE_EVALS` model
evaluations per point or more, such as APGD, FAB and Square): each device
compiles its own program, in parallel, which costs more than a short stage
(FGSM, PGD-10) saves; `map` reports the longest device's compile seconds to
the calling thread's compile clock.

Keys: a bucket split over k > 1 devices gives device d the key
`fold_in(bucket key, d)`, so results are deterministic for a seed, batch
size and device count (unsplit: the bucket key itself, as on one device).
"""

from __future__ import annotations

import concurrent.futures
import contextvars
from typing import Any, Callable, Sequence

import jax
import numpy as np

from tinyrobust.evaluation import scheduler_state


def split_devices(devices: Sequence[jax.Device] | None
                  ) -> tuple[list[jax.Device], list[jax.Device]]:
  """(mesh devices, worker devices) for the scheduler.

  CPU devices: a one-device mesh and one worker per device (per-device
  programs); any other platform: the mesh over all of them, one worker.
  """
  devices = list(jax.devices() if devices is None else devices)
  if len(devices) > 1 and all(d.platform == 'cpu' for d in devices):
    return devices[:1], devices
  return devices, devices[:1]


class Workers:
  """Runs a function on each device's share of a batch, side by side."""

  def __init__(self, devices: Sequence[jax.Device]):
    self.devices = list(devices)
    self.size = len(self.devices)
    self._pool = (concurrent.futures.ThreadPoolExecutor(
        self.size, thread_name_prefix='tinyrobust-device')
                  if self.size > 1 else None)
    self._replicas: tuple[Any, list[Any]] | None = None

  def replicas(self, tree) -> list[Any]:
    """`tree` on every worker device (cached for the last tree seen, which
    is kept alive so its identity cannot be reused)."""
    if self._replicas is None or self._replicas[0] is not tree:
      self._replicas = (tree, [jax.device_put(tree, d)
                               for d in self.devices])
    return self._replicas[1]

  def parts(self, n: int) -> list[np.ndarray]:
    """Row indices of each device's share of `n` rows (equal when the
    scheduler pads to a multiple of `size`)."""
    return np.array_split(np.arange(n), self.size)

  def map(self, fn: Callable[[int, jax.Device], Any]) -> list[Any]:
    """`[fn(d, device) for each device]`, concurrently when more than one.

    Each call runs in a copy of the caller's context (so `loops.auto_as`,
    `retire_as` and `depthwise.shifted_forward` hold there too); the first
    exception is raised here.
    """
    if self._pool is None:
      return [fn(0, self.devices[0])]

    def timed(d, device):
      c0 = scheduler_state.compile_clock()
      out = fn(d, device)
      return out, scheduler_state.compile_clock() - c0

    futures = [self._pool.submit(contextvars.copy_context().run, timed, d,
                                 device)
               for d, device in enumerate(self.devices)]
    done = [f.result() for f in futures]
    scheduler_state.credit_compile(max(c for _, c in done))
    return [out for out, _ in done]
