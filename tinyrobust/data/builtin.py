"""Built-in offline datasets that ship inside installed packages.

* `digits`: scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes),
  as `[N, 8, 8, 1]` float32 in [0, 1]; fixed stratified train/val/test split.
* `basic_motions`: sktime's BasicMotions (smart-watch accelerometer and
  gyroscope, 4 activities, 40 train / 40 test series of 100 steps at 10 Hz) as
  `[N, 100, 6]` (acc x,y,z then gyro x,y,z); the official train/test split plus
  a validation split carved from train, stratified.

Both need no network: they are the default data of the quick configs and the
README's first command.
"""

from __future__ import annotations

import functools

import numpy as np

from tinyrobust.data import base
from tinyrobust.data import signal

_NORMALISATIONS = ('standardise', 'none')


@functools.lru_cache(maxsize=None)
def _digits_arrays():
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  d = datasets.load_digits()
  x = (d.images / 16.0).astype(np.float32)[..., None]
  return x, d.target.astype(np.int32)


@base.register_source('digits')
def digits(split: str, seed: int = 0, val_fraction: float = 0.1,
           test_fraction: float = 0.2) -> base.Dataset:
  """scikit-learn 8x8 digits, `[N, 8, 8, 1]` in [0, 1], stratified splits."""
  seed, val_fraction, test_fraction = base.check_split_fractions(
      seed, val_fraction, test_fraction)
  x, y = _digits_arrays()
  train_f = 1.0 - val_fraction - test_fraction
  parts = dict(zip(('train', 'val', 'test'),
                   base.stratified_split(y, (train_f, val_fraction,
                                             test_fraction), seed)))
  idx = parts[split]
  return base.Dataset(
      x=x[idx], y=y[idx], label_names=tuple(str(i) for i in range(10)),
      input_range=(0.0, 1.0),
      meta=dict(
          source='sklearn.datasets.load_digits (UCI optdigits test set)',
          layout='NHWC [N, 8, 8, 1]', normalisation='pixel/16 -> [0, 1]',
          protocol=(f'stratified random split of 1797 images: train '
                    f'{train_f:.2f} / val {val_fraction} / test '
                    f'{test_fraction}, seed {seed}'),
          indices=idx.tolist()))


@functools.lru_cache(maxsize=None)
def _basic_motions_arrays(split: str):
  from sktime import datasets  # pylint: disable=g-import-not-at-top
  x, y = datasets.load_basic_motions(split=split.upper(),
                                     return_type='numpy3D')
  return np.transpose(x, (0, 2, 1)).astype(np.float32), np.asarray(y)


BASIC_MOTIONS_LABELS = ('badminton', 'running', 'standing', 'walking')
BASIC_MOTIONS_CHANNELS = ('acc_x', 'acc_y', 'acc_z', 'gyro_x', 'gyro_y',
                          'gyro_z')


@base.register_source('basic_motions')
def basic_motions(split: str, seed: int = 0, val_fraction: float = 0.25,
                  normalisation: str = 'standardise') -> base.Dataset:
  """sktime BasicMotions, `[N, 100, 6]`, official train/test + carved val."""
  seed = base.check_seed(seed)
  val_fraction = base.check_fraction('val_fraction', val_fraction)
  normalisation = base.check_choice('normalisation', normalisation,
                                    _NORMALISATIONS)
  x_tr, y_tr = _basic_motions_arrays('train')
  labels = {n: i for i, n in enumerate(BASIC_MOTIONS_LABELS)}
  y_tr_i = np.array([labels[str(v).lower()] for v in y_tr], np.int32)
  tr_idx, val_idx = base.stratified_split(
      y_tr_i, (1 - val_fraction, val_fraction), seed)
  if split == 'test':
    x_te, y_te = _basic_motions_arrays('test')
    x, y = x_te, np.array([labels[str(v).lower()] for v in y_te], np.int32)
    protocol = 'official BasicMotions TEST split (40 series)'
  else:
    idx = tr_idx if split == 'train' else val_idx
    x, y = x_tr[idx], y_tr_i[idx]
    protocol = (f'official TRAIN split, stratified {1 - val_fraction:.2f}/'
                f'{val_fraction} train/val, seed {seed}')
  # Statistics from the train part only, so val/test never leak into them.
  mean = x_tr[tr_idx].mean(axis=(0, 1))
  std = x_tr[tr_idx].std(axis=(0, 1)) + 1e-6
  if normalisation == 'standardise':
    x = (x - mean) / std
  return base.Dataset(
      x=x, y=y, label_names=BASIC_MOTIONS_LABELS, input_range=None,
      meta=dict(source='sktime.datasets.load_basic_motions',
                layout='NTC [N, 100, 6]', channels=BASIC_MOTIONS_CHANNELS,
                normalisation=normalisation,
                train_mean=mean.tolist(), train_std=std.tolist(),
                protocol=protocol, sample_rate_hz=10))


@signal.register_space('digits')
def _digits_space(options) -> signal.SpaceSpec:
  del options
  return signal.SpaceSpec(signal.PIXEL_UNITS, signal.PIXEL_UNITS, ('gray',),
                          signal.identity_problem)


@signal.register_space('basic_motions')
def _basic_motions_space(options) -> signal.SpaceSpec:
  norm = options.get('normalisation', 'standardise')
  return signal.SpaceSpec(('train-std',) if norm != 'none' else ('raw',),
                          no_signal='BasicMotions states no physical units '
                          'or sensor ranges for its raw channels')
