"""AURITUS earable activity recognition (9 activities, 45 participants).

Data: 399 recordings `<participant>_<activity>.csv` of a 6-axis ear-worn IMU
(no header; columns acc x,y,z in g, gyro x,y,z in deg/s, timestamp in s), from
`swapnilsayansaha/tinyml_security` (the study's public repository; the
`.npz` copy packs the same CSVs). Sources, by `source=`:

* 'local': `auritus_activity.npz` in `data_dir` or $TINYROBUST_DATA_DIR.
* 'csv': a folder `csv_dir` of the original CSV files.
* 'download': fetch the 399 CSVs from the public repository into
  `download_dir` (default `~/.cache/tinyrobust/auritus`), then read them.
* 'auto' (default): the first of local, `csv_dir` (when given), download.

Pipeline: each recording is put on a uniform time grid (`rate_hz`, default
100 Hz; samples sharing a timestamp are averaged, linear interpolation, gaps
longer than `max_gap_s` split the recording) or, with `rate_hz=None`, kept as
raw rows like the study; then cut into `window`/`stride` windows (study:
550/50). `channels` picks `[N, window, 6]` raw axes ('raw6'), `[N, window, 2]`
acc/gyro magnitudes ('magnitudes', as the study's ProtoNN/Bonsai) or the
10 window features `[N, 10]` ('features', `tinyrobust.data.har_features`).

Splits: `split_by='participant'` (default, honest): the 45 participants are
shuffled with `seed` and held out whole (test `test_fraction`, val
`val_fraction` of them); `split_by='window'`: the study's protocol, windows of
every recording shuffled into all splits (overlapping windows leak; a warning
is logged). `meta['participants']` lists each split's participants.

Units and normalisation: with `normalisation='none'` (the default for raw6 and
magnitudes, 'auto') inputs stay in physical units, so an L-inf eps of 0.4 (the
study's raw-window budget) means 0.4 g on acc axes and 0.4 deg/s on gyro axes.
`input_range` is then (-500.27, 500.26) for raw6 (the union of the sensor
ranges) and `meta['channel_range']` gives the per-channel ranges (+-4 g,
+-500 deg/s at int16 full scale) for per-channel clipping. 'standardise' (the 'auto' default for features, as
the study) uses mean/std of the train split only (stored in `meta`);
`input_range` is then None.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import urllib.error
import urllib.request

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from tinyrobust import fileio
from tinyrobust.data import base
from tinyrobust.data import har_features
from tinyrobust.data import imu
from tinyrobust.data import signal
from tinyrobust.data import sources

FILENAME = 'auritus_activity.npz'
LABEL_CODES = ('W', 'R', 'J', 'St', 'Tl', 'Tr', 'Si', 'L', 'F')
LABEL_NAMES = ('walking', 'running_jogging', 'jumping', 'standing',
               'turning_left', 'turning_right', 'sitting', 'laying_down',
               'falling')
CHANNEL_NAMES = ('acc_x_g', 'acc_y_g', 'acc_z_g', 'gyro_x_dps', 'gyro_y_dps',
                 'gyro_z_dps')
# Sensor full scale: int16 counts at 8192 LSB/g (+-4 g) and 65.5 LSB/(deg/s)
# (+-500 deg/s); the data contain the extreme counts (-4 g, -500.27 deg/s).
ACC_LSB_PER_G = 8192.0
GYRO_LSB_PER_DPS = 65.5
ACC_RANGE_G = tuple(float(np.float32(c / ACC_LSB_PER_G))
                    for c in (-32768, 32767))
GYRO_RANGE_DPS = tuple(float(np.float32(c / GYRO_LSB_PER_DPS))
                       for c in (-32768, 32767))
NUM_PARTICIPANTS = 45
# (participant, activity) pairs absent from the source repository.
MISSING = frozenset({(1, 'L'), (7, 'Si'), (10, 'Si'), (11, 'Si'), (12, 'Si'),
                     (13, 'Si')})
REPO_URL = ('https://raw.githubusercontent.com/swapnilsayansaha/'
            'tinyml_security/HEAD/Model%20Training/'
            'Human%20Activity%20Recognition/Data/Activity_Dataset/')
SOURCE_KINDS = ('auto', 'local', 'csv', 'download')
CHANNELS = ('raw6', 'magnitudes', 'features')
SPLIT_BY = ('participant', 'window')
NORMALISATIONS = ('auto', 'none', 'standardise')
_SPLITS = ('train', 'val', 'test')
_NAME_RE = re.compile(r'^(\d+)_([A-Za-z]+)\.csv$')


@dataclasses.dataclass(frozen=True, eq=False)
class Recordings:
  """All recordings: `signals[i]` `[L_i, 6]`, `t_ms[i]` `[L_i]`."""
  signals: tuple[np.ndarray, ...]
  t_ms: tuple[np.ndarray, ...]
  participant: np.ndarray
  label: np.ndarray
  origin: str


def expected_files() -> list[str]:
  """The 399 file names of the source repository."""
  return [f'{p}_{c}.csv' for p in range(1, NUM_PARTICIPANTS + 1)
          for c in LABEL_CODES if (p, c) not in MISSING]


def parse_name(name: str) -> tuple[int, int] | None:
  """`'10_Tl.csv'` -> (10, label index of 'Tl'); None for other names."""
  m = _NAME_RE.match(os.path.basename(name))
  if not m or m.group(2) not in LABEL_CODES:
    return None
  return int(m.group(1)), LABEL_CODES.index(m.group(2))


def read_csv(path: str) -> tuple[np.ndarray, np.ndarray]:
  """One recording: (`[L, 6]` float32 signals, `[L]` int64 timestamps in ms)."""
  try:
    a = np.loadtxt(path, delimiter=',', ndmin=2)
  except ValueError:  # a header line
    a = np.loadtxt(path, delimiter=',', ndmin=2, skiprows=1)
  if a.shape[1] < 7:
    raise ValueError(f'{path}: expected 7 columns (acc xyz, gyro xyz, time s)'
                     f', got {a.shape[1]}.')
  return a[:, :6].astype(np.float32), np.round(a[:, 6] * 1000).astype(np.int64)


def read_csv_dir(csv_dir: str) -> Recordings:
  """Reads every `<participant>_<activity>.csv` in `csv_dir`."""
  named = sorted((parse_name(f), f) for f in os.listdir(csv_dir)
                 if parse_name(f) is not None)
  if not named:
    raise sources.DataNotFoundError(
        f'No <participant>_<activity>.csv files in csv_dir={csv_dir!r}.')
  recs = [read_csv(os.path.join(csv_dir, f)) for _, f in named]
  return Recordings(tuple(r[0] for r in recs), tuple(r[1] for r in recs),
                    np.array([k[0] for k, _ in named]),
                    np.array([k[1] for k, _ in named]), csv_dir)


def read_npz(path: str) -> Recordings:
  d = fileio.load_npz(path)
  off, sig, ts = d['offsets'], d['signals'], d['timestamp_ms']
  n = len(off) - 1
  return Recordings(tuple(sig[off[i]:off[i + 1]] for i in range(n)),
                    tuple(ts[off[i]:off[i + 1]].astype(np.int64)
                          for i in range(n)),
                    d['participant'].astype(np.int64),
                    d['label'].astype(np.int64), path)


def download(download_dir: str | None = None, *, base_url: str = REPO_URL,
             timeout: float = 30.0) -> str:
  """Fetches the missing CSV files into `download_dir`; returns the folder.

  Raises:
    DataNotFoundError: a file could not be fetched (e.g. no network).
  """
  d = os.path.expanduser(download_dir or '~/.cache/tinyrobust/auritus')
  os.makedirs(d, exist_ok=True)
  for name in expected_files():
    dest = os.path.join(d, name)
    if os.path.exists(dest):
      continue
    url = base_url + name
    try:
      with urllib.request.urlopen(url, timeout=timeout) as r:
        payload = r.read()
    except (urllib.error.URLError, OSError) as e:
      raise sources.DataNotFoundError(_missing_message(
          None, f'Download of {url} failed ({type(e).__name__}: {e}).')
                                     ) from e
    with open(dest + '.part', 'wb') as f:
      f.write(payload)
    os.replace(dest + '.part', dest)
  return d


def _missing_message(data_dir, reason):
  return (f'No data for dataset {"auritus"!r}. {reason} Any one of these '
          f'makes it work: (1) set {base.DATA_DIR_ENV}=/path/to/folder/with/'
          f"{FILENAME}; (2) pass data_dir='/path/to/folder/with/{FILENAME}'; "
          "(3) pass csv_dir= a folder of the <participant>_<activity>.csv "
          "files; (4) connect to the network (source='download' or 'auto', "
          f'download=True) to fetch them from {REPO_URL}. Looked in: '
          f'data_dir={data_dir!r}, ${base.DATA_DIR_ENV}='
          f'{os.environ.get(base.DATA_DIR_ENV) or "(unset)"}.')


@functools.lru_cache(maxsize=2)
def _recordings(source, data_dir, csv_dir, download_dir, allow_download):
  if source not in SOURCE_KINDS:
    raise ValueError(f'Unknown source {source!r}. Valid: '
                     f'{", ".join(SOURCE_KINDS)}.')
  if source in ('auto', 'local'):
    path = base.find_local_file(FILENAME, data_dir)
    if path is not None:
      return read_npz(path)
    if source == 'local':
      raise sources.DataNotFoundError(_missing_message(
          data_dir, f'{FILENAME} not found.'))
  if source == 'csv' or (source == 'auto' and csv_dir):
    if not csv_dir or not os.path.isdir(csv_dir):
      raise sources.DataNotFoundError(_missing_message(
          data_dir, f'csv_dir={csv_dir!r} is not a folder.'))
    return read_csv_dir(csv_dir)
  if not allow_download:
    raise sources.DataNotFoundError(_missing_message(
        data_dir, 'No local copy and download=False.'))
  return read_csv_dir(download(download_dir))


@functools.lru_cache(maxsize=1)
def _windows(rec_key, rate_hz, max_gap_s, window, stride):
  """All windows `[N, window, 6]` and the recording index of each."""
  recs = _recordings(*rec_key)
  xs, owner = [], []
  for i, (sig, t) in enumerate(zip(recs.signals, recs.t_ms)):
    segs = ([np.asarray(sig, np.float32)] if rate_hz is None else
            imu.resample_uniform(sig, t, rate_hz=rate_hz, max_gap_s=max_gap_s))
    for s in segs:
      w = imu.sliding_windows(s, window, stride)
      xs.append(w)
      owner.append(np.full(len(w), i))
  return np.concatenate(xs), np.concatenate(owner)


def _assign(recs, owner, split_by, seed, val_fraction, test_fraction):
  """Window indices per split."""
  if split_by == 'window':
    logging.warning(
        "auritus split_by='window' (the study's protocol): overlapping windows "
        'of the same recording land in train and test, so test accuracy is '
        "optimistic. Use split_by='participant' for held-out participants.")
    perm = np.random.default_rng([seed, 1]).permutation(len(owner))
    n_te = int(round(test_fraction * len(perm)))
    n_va = int(round(val_fraction * len(perm)))
    parts = perm[n_te + n_va:], perm[n_te:n_te + n_va], perm[:n_te]
    return dict(zip(_SPLITS, (np.sort(p) for p in parts)))
  pids = np.unique(recs.participant)
  perm = np.random.default_rng([seed, 0]).permutation(pids)
  n_te = max(1, int(round(test_fraction * len(pids))))
  n_va = max(1, int(round(val_fraction * len(pids))))
  if n_te + n_va >= len(pids):
    raise ValueError(f'val/test fractions leave no training participant '
                     f'({len(pids)} participants).')
  groups = perm[n_te + n_va:], perm[n_te:n_te + n_va], perm[:n_te]
  win_pid = recs.participant[owner]
  return {s: np.flatnonzero(np.isin(win_pid, g))
          for s, g in zip(_SPLITS, groups)}


def _transform(x, channels):
  if channels == 'raw6':
    return x
  if channels == 'magnitudes':
    return np.sqrt(np.stack([(x[..., :3]**2).sum(-1), (x[..., 3:]**2).sum(-1)],
                            -1)).astype(np.float32)
  fn = jax.jit(har_features.window_features)
  return np.concatenate([np.asarray(fn(x[i:i + 2048]))
                         for i in range(0, len(x), 2048)] or
                        [np.zeros((0, har_features.NUM_FEATURES), np.float32)])


def _ranges(channels):
  (alo, ahi), (glo, ghi) = ACC_RANGE_G, GYRO_RANGE_DPS
  if channels == 'raw6':
    return ([alo] * 3 + [glo] * 3, [ahi] * 3 + [ghi] * 3)
  if channels == 'magnitudes':
    return [0.0, 0.0], [-alo * 3**0.5, -glo * 3**0.5]
  return None


@functools.lru_cache(maxsize=2)
def _prepared(rec_key, rate_hz, max_gap_s, window, stride, channels, split_by,
              seed, val_fraction, test_fraction, normalisation):
  recs = _recordings(*rec_key)
  xw, owner = _windows(rec_key, rate_hz, max_gap_s, window, stride)
  parts = _assign(recs, owner, split_by, seed, val_fraction, test_fraction)
  out = {s: _transform(xw[idx], channels) for s, idx in parts.items()}
  stats = {}
  if normalisation == 'standardise':
    axes = tuple(range(out['train'].ndim - 1))
    mean = out['train'].mean(axis=axes)
    std = out['train'].std(axis=axes)
    std = np.where(std < 1e-6, 1.0, std)  # as the study: constant -> 1
    out = {s: ((v - mean) / std).astype(np.float32) for s, v in out.items()}
    stats = dict(train_mean=mean.tolist(), train_std=std.tolist())
  for v in out.values():
    v.setflags(write=False)  # cached: shared by every caller
  return out, parts, owner, stats


def _check(window, stride, rate_hz, max_gap_s, channels, split_by, seed,
           val_fraction, test_fraction, normalisation):
  seed, _, _ = base.check_split_fractions(seed, val_fraction, test_fraction)
  for name, v in (('window', window), ('stride', stride)):
    if not isinstance(v, (int, np.integer)) or v < 1:
      raise ValueError(f'{name} must be a positive int, got {v!r}.')
  if rate_hz is not None and rate_hz <= 0:
    raise ValueError(f'rate_hz must be > 0 or None, got {rate_hz!r}.')
  if max_gap_s is not None and max_gap_s <= 0:
    raise ValueError(f'max_gap_s must be > 0 or None, got {max_gap_s!r}.')
  base.check_choice('channels', channels, CHANNELS)
  base.check_choice('split_by', split_by, SPLIT_BY)
  normalisation = base.check_choice('normalisation', normalisation,
                                    NORMALISATIONS)
  if normalisation == 'auto':
    normalisation = 'standardise' if channels == 'features' else 'none'
  return seed, normalisation


@base.register_source('auritus', splits=_SPLITS)
def auritus(split: str, source: str = 'auto', data_dir: str | None = None,
            csv_dir: str | None = None, download_dir: str | None = None,
            download: bool = True, rate_hz: float | None = 100.0,
            max_gap_s: float | None = 1.0, window: int = 550,
            stride: int = 50, channels: str = 'raw6',
            split_by: str = 'participant', seed: int = 0,
            val_fraction: float = 0.15, test_fraction: float = 0.2,
            normalisation: str = 'auto') -> base.Dataset:
  """AURITUS activity windows (see the module docstring for every option).

  Returns:
    `x` `[N, window, 6]`, `[N, window, 2]` or `[N, 10]` float32, `y` in 0..8;
    `meta` holds `participants`, `protocol`, units and normalisation.
  """
  seed, norm = _check(window, stride, rate_hz, max_gap_s, channels, split_by,
                      seed, val_fraction, test_fraction, normalisation)
  rec_key = (source, data_dir, csv_dir, download_dir, bool(download))
  rate = None if rate_hz is None else float(rate_hz)
  gap = None if (max_gap_s is None or rate is None) else float(max_gap_s)
  out, parts, owner, stats = _prepared(
      rec_key, rate, gap, int(window), int(stride), channels, split_by, seed,
      float(val_fraction), float(test_fraction), norm)
  recs = _recordings(*rec_key)
  win_rec = owner[parts[split]]
  ranges = _ranges(channels) if norm == 'none' else None
  meta = dict(
      source=recs.origin, channels=channels, split_by=split_by,
      participants=sorted(int(p) for p in np.unique(
          recs.participant[win_rec])),
      recordings=win_rec.tolist(), rate_hz=rate, max_gap_s=gap,
      window=int(window), stride=int(stride), normalisation=norm,
      channel_names=(list(CHANNEL_NAMES) if channels == 'raw6' else
                     ['acc_mag_g', 'gyro_mag_dps'] if channels == 'magnitudes'
                     else list(har_features.FEATURE_NAMES)),
      time_base=('raw rows, no resampling (study protocol)' if rate is None
                 else f'resampled to {rate:g} Hz on timestamps (bursts '
                 f'averaged, linear interpolation, gaps > {gap} s split)'),
      protocol=(f'{split_by}-wise split, val {val_fraction} / test '
                f'{test_fraction}, seed {seed}' + (
                    ' (LEAKY: windows of one recording in several splits)'
                    if split_by == 'window' else ' (participants held out)')),
      eps_units=('physical: acc in g, gyro in deg/s' if norm == 'none' else
                 'standardised units (train std)'),
      sensor_range={'acc_g': list(ACC_RANGE_G),
                    'gyro_dps': list(GYRO_RANGE_DPS)},
      **stats)
  if ranges is not None:
    meta['channel_range'] = dict(lo=ranges[0], hi=ranges[1])
  input_range = None
  if ranges is not None:
    input_range = (float(min(ranges[0])), float(max(ranges[1])))
  return base.Dataset(x=out[split], y=recs.label[win_rec],
                      label_names=LABEL_NAMES, input_range=input_range,
                      meta=meta)


# The signal space: raw acc (g) / gyro (deg/s) windows; eps in 'g' (gyro
# radius eps * gyro_per_g) or 'deg/s' (acc radius eps / gyro_per_g); clip:
# the sensor's full scale per channel (+-4 g, +-500 deg/s).


def _normalisation(options) -> str:
  norm = base.check_choice('normalisation',
                           options.get('normalisation', 'auto'),
                           NORMALISATIONS)
  if norm == 'auto':
    norm = 'standardise' if options.get('channels') == 'features' else 'none'
  return norm


@signal.register_space('auritus')
def _space(options) -> signal.SpaceSpec:
  return signal.SpaceSpec(
      ('train-std',) if _normalisation(options) == 'standardise' else
      ('physical',), signal.SENSOR_UNITS, CHANNEL_NAMES, _signal_problem)


def default_gyro_per_g(ds, options) -> float:
  """Mean gyro / mean acc train-split std of the raw windows (deg/s per g),
  so one eps is the same fraction of the typical signal on both sensors."""
  meta = ds.meta or {}
  if meta.get('channels') != 'raw6' or 'train_std' not in meta:
    meta = base.load('auritus', 'train', **{
        **options, 'channels': 'raw6', 'normalisation': 'standardise'}).meta
  std = np.asarray(meta['train_std'], np.float64)
  return float(np.mean(std[3:]) / np.mean(std[:3]))


def _frontend(meta):
  """Raw `[B, T, 6]` (g, deg/s) -> the loader's channels and normalisation."""
  feats = {'raw6': lambda s: s, 'magnitudes': har_features.magnitudes,
           'features': har_features.window_features}[meta['channels']]
  if meta.get('normalisation') != 'standardise':
    return feats
  mean = jnp.asarray(meta['train_mean'], jnp.float32)
  std = jnp.asarray(meta['train_std'], jnp.float32)
  return lambda s: (feats(s) - mean) / std


def _raw_windows(ds, split, options, lo, hi):
  """The split's raw6 windows in physical units, and their labels."""
  meta = ds.meta or {}
  if meta.get('channels') == 'raw6' and meta.get('normalisation') == \
      'standardise':  # invert the standardisation: no reload needed
    return np.clip(ds.x * np.asarray(meta['train_std'], np.float32) +
                   np.asarray(meta['train_mean'], np.float32), lo, hi), ds.y
  if meta.get('channels') == 'raw6':
    return ds.x, ds.y
  raw = base.load('auritus', split, **{**options, 'channels': 'raw6',
                                       'normalisation': 'none'})
  return raw.x, raw.y


def _signal_problem(ds, apply_fn, threat, split, options) -> signal.Problem:
  """Raw acc/gyro windows in g and deg/s, clipped to the sensor range."""
  meta = ds.meta or {}
  (alo, ahi), (glo, ghi) = ACC_RANGE_G, GYRO_RANGE_DPS
  lo = np.asarray([alo] * 3 + [glo] * 3, np.float32)
  hi = np.asarray([ahi] * 3 + [ghi] * 3, np.float32)
  frontend = _frontend(meta)
  raw_x, raw_y = _raw_windows(ds, split, options, lo, hi)
  signal.check_same('auritus', raw_y, ds.y, frontend, raw_x, ds.x)
  gyro = threat.get('gyro_per_g') or default_gyro_per_g(ds, options)
  if threat['eps_units'] == 'g':
    scale, units = [1.0] * 3 + [gyro] * 3, (
        f'g (acc); gyro eps x {gyro:.4g} deg/s per g')
  else:
    scale, units = [1.0 / gyro] * 3 + [1.0] * 3, (
        f'deg/s (gyro); acc eps / {gyro:.4g} deg/s per g')
  clip = threat.get('clip')
  return signal.Problem(
      'signal', signal.with_frontend(apply_fn, frontend),
      raw_x.astype(np.float32), raw_y,
      signal.as_clip(clip) if clip is not None else (lo, hi),
      np.asarray(scale, np.float32), units, frontend,
      {'gyro_per_g': gyro, 'frontend': meta.get('channels'),
       'normalisation': meta.get('normalisation'),
       'clip_lo': lo.tolist(), 'clip_hi': hi.tolist()})
