"""Each dataset's signal space: what an adversary at the sensor perturbs.

The study perturbed each model's own input (MFCCs, standardised windows,
window features). Its attack model says the adversary perturbs the observed
sensor signal, so `space='signal'` (`tinyrobust.evaluation.threat_space`)
attacks `model(normalise(frontend(x)))` with `x` the raw signal, eps and the
clip range in signal units, and the front-end and normalisation part of the
differentiable forward pass:

| dataset (options)             | input space (units)    | signal space       |
|-------------------------------|------------------------|--------------------|
| digits, cifar10               | pixels ('pixel/255')   | the same pixels    |
| speech_commands waveform      | waveform ('waveform')  | the same waveform  |
| speech_commands mfcc / logmel | features ('mfcc' ...)  | 16 kHz waveform in |
|                               |                        | [-1, 1], through   |
|                               |                        | `data.audio`       |
| auritus raw6 / magnitudes /   | 'train-std' when       | raw acc (g) / gyro |
| features                      | standardised, else     | (deg/s) windows,   |
|                               | 'physical'             | through `har_      |
|                               |                        | features` and the  |
|                               |                        | train standardiser |

Each dataset module registers its own `SpaceSpec` next to its loader
(`@signal.register_space('name')`), so adding a dataset with a signal space
is one file. Datasets without one (basic_motions: no physical units or
sensor ranges; datasets registered by plug-ins that register no space) have
no signal space.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import numpy as np

from tinyrobust import registry

PIXEL_UNITS = ('pixel/255', 'pixel')
SENSOR_UNITS = ('g', 'deg/s')


@dataclasses.dataclass(frozen=True)
class SpaceSpec:
  """A dataset's two spaces, known from its name and options alone.

  Attributes:
    input_units: eps units accepted in the input space (first = default);
      empty = any label (a dataset that registers no space).
    signal_units: eps units of the signal space; empty = no signal space.
    channels: names of the signal's channels (last axis), for messages.
    build: `build(dataset, apply_fn, threat, split, options) -> Problem`
      for the signal space.
    no_signal: why there is no signal space (when `signal_units` is empty).
  """
  input_units: tuple[str, ...]
  signal_units: tuple[str, ...] = ()
  channels: tuple[str, ...] | None = None
  build: Callable[..., 'Problem'] | None = None
  no_signal: str = ''


@dataclasses.dataclass(frozen=True)
class Problem:
  """One attack problem: what is attacked, on which data, in which units.

  Attributes:
    space: 'input' or 'signal'.
    apply_fn: `apply_fn(variables, x) -> logits`, x in the space's units.
    x, y: evaluation inputs (in the space's units) and labels.
    clip: `(lo, hi)` (scalars or per-channel arrays) or None.
    eps_scale: per-channel eps scale, or None (1).
    eps_units: how eps is stated (e.g. 'g (gyro eps x 130.2 deg/s)').
    frontend: `frontend(x) -> model input`, differentiable (None: identity).
    info: numbers behind the conversion, for the results file.
  """
  space: str
  apply_fn: Callable[[Any, Any], Any]
  x: np.ndarray
  y: np.ndarray
  clip: tuple[Any, Any] | None
  eps_scale: np.ndarray | None
  eps_units: str
  frontend: Callable[[Any], Any] | None = None
  info: dict[str, Any] = dataclasses.field(default_factory=dict)


# name -> fn(options) -> SpaceSpec
SPECS = registry.Registry('signal-space dataset')


def register_space(name: str):
  """Decorator: `fn(options) -> SpaceSpec` is dataset `name`'s spaces."""
  return SPECS.register(name)


def spec_for(name: str, options: Mapping[str, Any] | None) -> SpaceSpec:
  """The `SpaceSpec` of dataset `name` loaded with `options`."""
  if name not in SPECS:
    return SpaceSpec(input_units=(), no_signal=(
        'no front-end from its raw signal is registered with '
        'tinyrobust.data.signal.register_space'))
  return SPECS.lookup(name)(dict(options or {}))


def as_clip(clip):
  """`(lo, hi)` as float32 arrays (scalars or per channel), or None."""
  if clip is None:
    return None
  return (np.asarray(clip[0], np.float32), np.asarray(clip[1], np.float32))


def identity_problem(ds, apply_fn, threat, split, options) -> Problem:
  """Images and waveforms: the signal is the model input."""
  del split, options
  clip = threat.get('clip')
  return Problem('signal', apply_fn, ds.x, ds.y,
                 as_clip(clip if clip is not None else ds.input_range),
                 None, threat['eps_units'])


def with_frontend(apply_fn, frontend):
  """`apply_fn` on raw signals: `apply_fn(v, frontend(s))`."""
  return lambda v, s: apply_fn(v, frontend(s))


def check_same(name: str, raw_y, y, frontend, raw_x, x) -> None:
  """The raw split is the model's split: same labels, and the front-end
  reproduces the model inputs (on a few examples)."""
  if len(raw_y) != len(y) or not np.array_equal(raw_y, y):
    raise RuntimeError(f'{name}: the raw-signal split does not line up with '
                       'the model-input split (labels differ).')
  got = np.asarray(jax.jit(frontend)(raw_x[:8]))
  tol = 1e-3 * (1.0 + np.abs(x[:8]))
  if not np.all(np.abs(got - x[:8]) <= tol):
    raise RuntimeError(
        f'{name}: the front-end does not reproduce the model inputs from the '
        f'raw signal (max diff {np.max(np.abs(got - x[:8])):.3g}).')
