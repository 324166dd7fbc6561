"""One JAX device per CPU core, so batch-sharded work uses the whole host.

XLA:CPU runs a program on one device largely on one core: its convolutions
and element-wise loops parallelise poorly over a small batch. Split into
several host devices, every batch axis the toolkit shards
(`tinyrobust.sharding`: the scheduler's buckets, evaluation, training)
runs as independent per-device programs side by side. On the 2-core CPU this
was built on, one ResNet8 input gradient on 100 images took 144 ms on one
device and 93 ms as two per-device programs, and the scheduler's APGD-CE ran
1.68x faster (`experiments/bench_cpu_devices.py`, interleaved in one
process).

The count has to be fixed before JAX initialises its backends (the first
JAX operation), so the command-line entry points call `enable()` first thing;
a library user calls it right after `import jax`, or configures JAX
themselves. The count is, in order: the `n` argument,
`$TINYROBUST_CPU_DEVICES`, the cores this process may use capped at
`MAX_DEVICES`. A count the user already configured (`jax_num_cpu_devices`,
or `--xla_force_host_platform_device_count` in `$XLA_FLAGS`) is left alone;
`TINYROBUST_CPU_DEVICES=1` keeps one device. Only the CPU backend is split:
on GPU/TPU the accelerators are the devices and nothing changes.

Counts do not depend on the device count: per-example attacks compute the
same per-example programs on every shard (checked against one device by
`tests/test_cpu_devices.py`); the batch is padded to a multiple of it.
"""

from __future__ import annotations

import os

from absl import logging
import jax

MAX_DEVICES = 8  # measured on 2 cores only; more shards than this is untried
ENV = 'TINYROBUST_CPU_DEVICES'
_XLA_FLAG = '--xla_force_host_platform_device_count'


def usable_cores() -> int:
  """Cores this process may run on (its CPU affinity where the OS has one)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # macOS, Windows
    return os.cpu_count() or 1


def _count(n) -> int:
  """Validates a device count given as an argument or through `ENV`."""
  where = 'n' if n is not None else f'${ENV}'
  value = n if n is not None else os.environ[ENV]
  try:
    count = int(value)
  except (TypeError, ValueError):
    count = None
  if count is None or isinstance(value, bool) or count < 1 or (
      isinstance(value, float) and value != count):
    raise ValueError(f'{where}={value!r}: the number of CPU devices must be '
                     f'an integer >= 1 (1 keeps a single device).')
  return count


def configured() -> bool:
  """True when the user already chose a CPU device count."""
  return (jax.config.jax_num_cpu_devices > 0
          or _XLA_FLAG in os.environ.get('XLA_FLAGS', ''))


def enable(n: int | None = None) -> int | None:
  """Asks JAX for `n` CPU devices; returns the count set (None: left alone).

  An explicit `n` always applies (raising if backends are already up). The
  default leaves a configured count alone and, when JAX is already running
  (a caller that imported tinyrobust late, a test process), keeps what it
  has with an info line instead of failing: more devices is an optimisation,
  never a reason to stop a run.
  """
  if n is None and ENV not in os.environ and configured():
    return None
  count = (_count(n) if n is not None or ENV in os.environ
           else min(usable_cores(), MAX_DEVICES))
  try:
    jax.config.update('jax_num_cpu_devices', count)
  except RuntimeError:
    if n is not None:
      raise RuntimeError(
          f'cpu_devices.enable({n}) must run before the first JAX '
          'operation: JAX has already initialised its backends.') from None
    logging.info('JAX already running; keeping its CPU device count.')
    return None
  return count
