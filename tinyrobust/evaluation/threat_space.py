"""Where the perturbation lives: the model's input or the sensor signal.

A config's `threat` section names the space (`'input'`: the model's own
input, the study's setting; `'signal'`: the raw sensor signal through the
dataset's differentiable front-end and normalisation), the eps units, an
optional clip range, the precisions to evaluate (`PRECISIONS`: float32 and
the int8 models of `tinyrobust.evaluation.deployed`) and, for AURITUS, the
gyro/acc eps ratio. Each dataset's signal space (its units, channels and
front-end) is registered next to its loader (`tinyrobust.data.signal`).

`check_threat` validates the section before any data is loaded;
`attack_problem` builds the attacked function and data.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from tinyrobust.attacks import threat as threat_lib
# Importing tinyrobust.data (this module's package) registers every
# dataset's signal space.
from tinyrobust.data import signal
from tinyrobust.data.signal import Problem
from tinyrobust.data.signal import SENSOR_UNITS
from tinyrobust.data.signal import spec_for
from tinyrobust.data.signal import SpaceSpec
from tinyrobust.evaluation import db_budget

SPACES = ('input', 'signal')
FIELDS = ('space', 'eps_units', 'clip', 'precisions', 'gyro_per_g')
PRECISIONS = ('float32', 'int8-litert', 'int8-fakequant')


def check_precisions(precisions: Sequence[str]) -> tuple[str, ...]:
  """A non-empty list of known precisions; float32 is always included."""
  if isinstance(precisions, str) or not precisions:
    raise ValueError(f'precisions must be a non-empty list of '
                     f'{PRECISIONS}, got {precisions!r}.')
  bad = [p for p in precisions if p not in PRECISIONS]
  if bad:
    raise ValueError(f'Unknown precision(s) {bad}. Valid: '
                     f'{", ".join(PRECISIONS)}.')
  return tuple(p for p in PRECISIONS if p in precisions or p == 'float32')


def check_threat(section: Mapping[str, Any] | None, dataset: str,
                 options: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """A config's `threat` section, checked against the dataset.

  Returns:
    `{'space', 'eps_units', 'clip', 'precisions', 'gyro_per_g'}` with
    defaults filled in (eps_units: the space's first unit).

  Raises:
    ValueError: an unknown field, space or precision; `space='signal'` for
      a dataset without a signal front-end; eps units that are not the
      space's; a clip range with lo > hi (naming the channel) or not finite;
      a non-positive `gyro_per_g`.
  """
  t = dict(section or {})
  bad = sorted(set(t) - set(FIELDS))
  if bad:
    raise ValueError(f'Unknown threat option(s) {bad}. Valid: '
                     f'{", ".join(FIELDS)}.')
  space = t.get('space') or 'input'
  if space not in SPACES:
    raise ValueError(f'threat.space={space!r}. Valid: {", ".join(SPACES)}.')
  precisions = list(check_precisions(t.get('precisions') or ('float32',)))
  spec = spec_for(dataset, options)
  if space == 'signal' and not spec.signal_units:
    raise ValueError(f"threat.space='signal' needs a front-end from the raw "
                     f'sensor signal; dataset {dataset!r} has none '
                     f'({spec.no_signal}). Use space=\'input\'.')
  units = _check_units(t.get('eps_units') or '', space, spec, dataset)
  gyro = t.get('gyro_per_g')
  if gyro is not None:
    if units not in SENSOR_UNITS:
      raise ValueError(f'threat.gyro_per_g={gyro!r} applies to AURITUS '
                       f'signal eps in {SENSOR_UNITS}; eps_units here is '
                       f'{units!r}.')
    if isinstance(gyro, bool) or not isinstance(gyro, (int, float)) or \
        not np.isfinite(gyro) or gyro <= 0:
      raise ValueError(f'threat.gyro_per_g must be a positive number '
                       f'(deg/s per g), got {gyro!r}.')
  clip = t.get('clip')
  if clip is not None:
    clip = check_clip(clip, spec.channels if space == 'signal' else None)
  return {'space': space, 'eps_units': units, 'clip': clip,
          'precisions': precisions,
          'gyro_per_g': None if gyro is None else float(gyro)}


def _check_units(units: str, space: str, spec: SpaceSpec,
                 dataset: str) -> str:
  allowed = spec.input_units if space == 'input' else spec.signal_units
  if db_budget.is_db(units):  # an SNR budget: waveforms only (issue 25)
    db_budget.check_db_threat(units, allowed, dataset, space)
    return units
  if not allowed:  # a dataset that registers no space: any input label
    return units or 'input'
  if not units:
    return allowed[0]
  if units in allowed:
    return units
  other = spec.signal_units if space == 'input' else spec.input_units
  hint = (f' ({units!r} is a unit of the other space)' if units in other
          else '')
  raise ValueError(f'threat.eps_units={units!r} does not match '
                   f'space={space!r} on {dataset!r}{hint}. Valid: '
                   f'{", ".join(allowed)}.')


def check_clip(clip: Any, channels: tuple[str, ...] | None = None
               ) -> list[Any]:
  """`(lo, hi)` scalars or per-channel sequences; lo <= hi per channel.

  Returns:
    `[lo, hi]` as JSON-able lists/floats.

  Raises:
    ValueError: not a pair, not finite, or lo > hi (naming the channel).
  """
  if isinstance(clip, str) or not isinstance(clip, (tuple, list)) or \
      len(clip) != 2:
    raise ValueError(f'threat.clip must be (lo, hi) with lo, hi numbers or '
                     f'per-channel lists, got {clip!r}.')
  try:
    lo, hi = np.broadcast_arrays(np.asarray(clip[0], np.float64),
                                 np.asarray(clip[1], np.float64))
  except (TypeError, ValueError) as err:
    raise ValueError(f'threat.clip lo and hi must be numbers or per-channel '
                     f'lists of the same length, got {clip!r}.') from err
  if lo.ndim and np.any(lo > hi):
    c = int(np.argwhere(lo > hi)[0][-1])
    name = (channels[c] if channels and len(channels) == lo.shape[-1]
            else f'channel {c}')
    raise ValueError(f'threat.clip has lo > hi for {name!r}: lo='
                     f'{float(lo.reshape(-1, lo.shape[-1])[0, c])} > hi='
                     f'{float(hi.reshape(-1, hi.shape[-1])[0, c])}.')
  threat_lib.check_clip((lo, hi))  # finite, scalar lo <= hi
  return [np.asarray(clip[0]).tolist(), np.asarray(clip[1]).tolist()]


def attack_problem(threat: Mapping[str, Any], dataset, apply_fn: Callable,
                   *, name: str, split: str = 'test',
                   options: Mapping[str, Any] | None = None) -> Problem:
  """The attacked function, data, clip and eps scale of `threat`'s space.

  Args:
    threat: a `check_threat` result.
    dataset: the loaded split (`tinyrobust.data.Dataset`) the model sees.
    apply_fn: `apply_fn(variables, model_input) -> logits`.
    name, split, options: how `dataset` was loaded (the signal space loads
      the same windows/clips as raw signals).
  """
  spec = spec_for(name, options)
  if threat['space'] == 'input':
    clip = threat.get('clip')
    if clip is None:
      clip = _input_clip(dataset)
    units = threat['eps_units']
    return Problem('input', apply_fn, dataset.x, dataset.y,
                   signal.as_clip(clip), None, units)
  return spec.build(dataset, apply_fn, threat, split, dict(options or {}))


def _input_clip(ds):
  """Per-channel physical ranges when the loader states them, else the
  dataset's `input_range`."""
  rng = (ds.meta or {}).get('channel_range')
  if rng is not None:
    return rng['lo'], rng['hi']
  return ds.input_range
