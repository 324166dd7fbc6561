"""Where the perturbation lives: the model's input or the sensor signal.

The study perturbed each model's own input (MFCCs, standardised windows,
window features). Its attack model says the adversary perturbs the observed
sensor signal, so `space='signal'` attacks `model(normalise(frontend(x)))`
with `x` the raw signal, eps and the clip range in signal units, and the
front-end and normalisation part of the differentiable forward pass:

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

Datasets without a stated signal (basic_motions: no physical units or
sensor ranges; datasets registered by plug-ins) have no signal space.

AURITUS signal eps: one eps grid is stated in `'g'` (acc radius eps g, gyro
radius `eps * gyro_per_g` deg/s) or `'deg/s'` (gyro radius eps deg/s, acc
radius `eps / gyro_per_g` g). `gyro_per_g` defaults to the ratio of the
mean gyro to the mean acc train-split standard deviation of the raw windows
(so one eps is the same fraction of the typical signal on both sensors);
the value used is reported. The clip range is the sensor's full scale per
channel, +-4 g and +-500 deg/s (`meta['sensor_range']`).

`check_threat` validates a config's `threat` section before any data is
loaded; `attack_problem` builds the attacked function and data.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from tinyrobust import registry
from tinyrobust.attacks import threat as threat_lib

SPACES = ('input', 'signal')
FIELDS = ('space', 'eps_units', 'clip', 'precisions', 'gyro_per_g')
PIXEL_UNITS = ('pixel/255', 'pixel')
SENSOR_UNITS = ('g', 'deg/s')


@dataclasses.dataclass(frozen=True)
class SpaceSpec:
  """A dataset's two spaces, known from its name and options alone.

  Attributes:
    input_units: eps units accepted in the input space (first = default);
      empty = any label (a dataset this module does not know).
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


SPECS = registry.Registry('threat-model dataset')


def spec_for(name: str, options: Mapping[str, Any] | None) -> SpaceSpec:
  """The `SpaceSpec` of dataset `name` loaded with `options`."""
  if name not in SPECS:
    return SpaceSpec(input_units=(), no_signal=(
        'no front-end from its raw signal is registered in '
        'tinyrobust.threat_model'))
  return SPECS.lookup(name)(dict(options or {}))


# --------------------------------------------------------------------------
# Checks (before any data is loaded).


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
  from tinyrobust import deployed  # pylint: disable=g-import-not-at-top
  t = dict(section or {})
  bad = sorted(set(t) - set(FIELDS))
  if bad:
    raise ValueError(f'Unknown threat option(s) {bad}. Valid: '
                     f'{", ".join(FIELDS)}.')
  space = t.get('space') or 'input'
  if space not in SPACES:
    raise ValueError(f'threat.space={space!r}. Valid: {", ".join(SPACES)}.')
  precisions = list(deployed.check_precisions(
      t.get('precisions') or ('float32',)))
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
  if not allowed:  # a dataset this module does not know: any input label
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


# --------------------------------------------------------------------------
# Building the problem (loads the raw signal when the space needs it).


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
    return Problem('input', apply_fn, dataset.x, dataset.y, _as_clip(clip),
                   None, units)
  return spec.build(dataset, apply_fn, threat, split, dict(options or {}))


def _as_clip(clip):
  if clip is None:
    return None
  return (np.asarray(clip[0], np.float32), np.asarray(clip[1], np.float32))


def _input_clip(ds):
  """Per-channel physical ranges when the loader states them, else the
  dataset's `input_range`."""
  rng = (ds.meta or {}).get('channel_range')
  if rng is not None:
    return rng['lo'], rng['hi']
  return ds.input_range


def _identity(ds, apply_fn, threat, split, options) -> Problem:
  """Images and waveforms: the signal is the model input."""
  del split, options
  clip = threat.get('clip')
  return Problem('signal', apply_fn, ds.x, ds.y,
                 _as_clip(clip if clip is not None else ds.input_range),
                 None, threat['eps_units'])


def _with_frontend(apply_fn, frontend):
  return lambda v, s: apply_fn(v, frontend(s))


def _check_same(name: str, raw_y, y, frontend, raw_x, x) -> None:
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


def _load(name, split, options):
  from tinyrobust import data  # pylint: disable=g-import-not-at-top
  return data.load(name, split, **options)


# --------------------------------------------------------------------------
# Datasets.


@SPECS.register('digits')
def _digits(options) -> SpaceSpec:
  del options
  return SpaceSpec(PIXEL_UNITS, PIXEL_UNITS, ('gray',), _identity)


@SPECS.register('cifar10')
def _cifar10(options) -> SpaceSpec:
  del options
  return SpaceSpec(PIXEL_UNITS, PIXEL_UNITS, ('red', 'green', 'blue'),
                   _identity)


@SPECS.register('basic_motions')
def _basic_motions(options) -> SpaceSpec:
  norm = options.get('normalisation', 'standardise')
  return SpaceSpec(('train-std',) if norm != 'none' else ('raw',),
                   no_signal='BasicMotions states no physical units or '
                   'sensor ranges for its raw channels')


@SPECS.register('speech_commands')
def _speech_commands(options) -> SpaceSpec:
  features = options.get('features', 'waveform')
  if features == 'waveform':
    return SpaceSpec(('waveform',), ('waveform',), None, _identity)
  return SpaceSpec(({'mfcc': 'mfcc', 'logmel': 'log-mel'}.get(
      features, features),), ('waveform',), None, _speech_signal)


def _speech_signal(ds, apply_fn, threat, split, options) -> Problem:
  """Waveforms `[N, 16000]` in [-1, 1] through the JAX MFCC/log-mel."""
  from tinyrobust.data import audio  # pylint: disable=g-import-not-at-top
  features = options.get('features', 'waveform')
  raw = _load('speech_commands', split, {**options, 'features': 'waveform'})
  frontend = audio.feature_fn(features)
  _check_same('speech_commands', raw.y, ds.y, frontend, raw.x, ds.x)
  clip = threat.get('clip')
  return Problem(
      'signal', _with_frontend(apply_fn, frontend), raw.x, raw.y,
      _as_clip(clip if clip is not None else raw.input_range), None,
      'waveform (full scale = 1)', frontend,
      {'frontend': f'tinyrobust.data.audio.{features} (MLPerf Tiny KWS)'})


def _auritus_norm(options) -> str:
  from tinyrobust.data import base  # pylint: disable=g-import-not-at-top
  norm = base.check_choice('normalisation',
                           options.get('normalisation', 'auto'),
                           ('auto', 'none', 'standardise'))
  if norm == 'auto':
    norm = 'standardise' if options.get('channels') == 'features' else 'none'
  return norm


@SPECS.register('auritus')
def _auritus(options) -> SpaceSpec:
  from tinyrobust.data import auritus  # pylint: disable=g-import-not-at-top
  norm = _auritus_norm(options)
  return SpaceSpec(('train-std',) if norm == 'standardise' else
                   ('physical',), SENSOR_UNITS, auritus.CHANNEL_NAMES,
                   _auritus_signal)


def default_gyro_per_g(ds, options) -> float:
  """Mean gyro / mean acc train-split std of the raw windows (deg/s per g)."""
  meta = ds.meta or {}
  if meta.get('channels') != 'raw6' or 'train_std' not in meta:
    meta = _load('auritus', 'train', {**options, 'channels': 'raw6',
                                       'normalisation': 'standardise'}).meta
  std = np.asarray(meta['train_std'], np.float64)
  return float(np.mean(std[3:]) / np.mean(std[:3]))


def _auritus_frontend(meta):
  """Raw `[B, T, 6]` (g, deg/s) -> the loader's channels and normalisation."""
  from tinyrobust.data import har_features  # pylint: disable=g-import-not-at-top
  kind = meta['channels']
  feats = {'raw6': lambda s: s, 'magnitudes': har_features.magnitudes,
           'features': har_features.window_features}[kind]
  if meta.get('normalisation') != 'standardise':
    return feats
  mean = jnp.asarray(meta['train_mean'], jnp.float32)
  std = jnp.asarray(meta['train_std'], jnp.float32)
  return lambda s: (feats(s) - mean) / std


def _auritus_signal(ds, apply_fn, threat, split, options) -> Problem:
  """Raw acc/gyro windows in g and deg/s, clipped to the sensor range."""
  from tinyrobust.data import auritus  # pylint: disable=g-import-not-at-top
  meta = ds.meta or {}
  (alo, ahi), (glo, ghi) = auritus.ACC_RANGE_G, auritus.GYRO_RANGE_DPS
  lo = np.asarray([alo] * 3 + [glo] * 3, np.float32)
  hi = np.asarray([ahi] * 3 + [ghi] * 3, np.float32)
  frontend = _auritus_frontend(meta)
  if meta.get('channels') == 'raw6' and meta.get('normalisation') == \
      'standardise':  # invert the standardisation: no reload needed
    raw_x = np.clip(ds.x * np.asarray(meta['train_std'], np.float32) +
                    np.asarray(meta['train_mean'], np.float32), lo, hi)
    raw_y = ds.y
  elif meta.get('channels') == 'raw6':
    raw_x, raw_y = ds.x, ds.y
  else:
    raw = _load('auritus', split, {**options, 'channels': 'raw6',
                                    'normalisation': 'none'})
    raw_x, raw_y = raw.x, raw.y
  _check_same('auritus', raw_y, ds.y, frontend, raw_x, ds.x)
  gyro = threat.get('gyro_per_g') or default_gyro_per_g(ds, options)
  if threat['eps_units'] == 'g':
    scale, units = [1.0] * 3 + [gyro] * 3, (
        f'g (acc); gyro eps x {gyro:.4g} deg/s per g')
  else:
    scale, units = [1.0 / gyro] * 3 + [1.0] * 3, (
        f'deg/s (gyro); acc eps / {gyro:.4g} deg/s per g')
  clip = threat.get('clip')
  return Problem(
      'signal', _with_frontend(apply_fn, frontend), raw_x.astype(np.float32),
      raw_y, _as_clip(clip) if clip is not None else (lo, hi),
      np.asarray(scale, np.float32), units, frontend,
      {'gyro_per_g': gyro, 'frontend': meta.get('channels'),
       'normalisation': meta.get('normalisation'),
       'clip_lo': lo.tolist(), 'clip_hi': hi.tolist()})
