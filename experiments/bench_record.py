"""What the scheduler's kernels returned, for benchmarks that judge it.

`Recorder.wrap(attack)` wraps every stage so each call keeps (x_in, x_adv);
`per_call` joins the recordings of one scheduler call (one per device on a
CPU split into devices) in the order of the call's rows.
"""

from __future__ import annotations

import itertools

import numpy as np

from tinyrobust.attacks import registry


class Recorder:
  """Wraps attack records so every stage call keeps (x_in, x_adv, eps)."""

  def __init__(self):
    self.out = []

  def _stage(self, stage: registry.Attack) -> registry.Attack:
    def kernel(variables, x, y, key, eps):
      x_adv = stage(variables, x, y, key, eps)
      self.out.append((x, x_adv[0] if isinstance(x_adv, tuple) else x_adv))
      return x_adv
    # loop='host' on the wrapper only: the scheduler then calls it eagerly
    # (the recorder needs concrete arrays); the stage runs as it would.
    return registry.Attack(stage.name, dict(stage.config, loop='host'),
                           kernel)

  def wrap(self, attack: registry.Attack) -> registry.Attack:
    if attack.stages:
      return registry.Attack(attack.name, dict(attack.config), attack.kernel,
                             stages=tuple(self._stage(s)
                                          for s in attack.stages))
    return self._stage(attack)


def per_call(calls, recorded, k: int, x: np.ndarray) -> list[tuple]:
  """(x_in, x_adv) per scheduler call: on a CPU split into k devices a
  call made k recorded kernel calls (one per device, in any order), joined
  here in the order that rebuilds the call's rows."""
  if len(recorded) != k * len(calls):
    raise AssertionError(f'{len(calls)} scheduler calls x {k} devices, '
                         f'{len(recorded)} recorded outputs.')
  out = []
  for j, (_, _, _, idx) in enumerate(calls):
    for parts in itertools.permutations(recorded[j * k:(j + 1) * k]):
      x_in = np.concatenate([np.asarray(p[0]) for p in parts])
      if np.array_equal(x_in[:len(idx)], x[idx]):
        out.append((x_in, np.concatenate([np.asarray(p[1]) for p in parts])))
        break
    else:
      raise AssertionError('recorded inputs do not match the call log.')
  return out
