"""CIFAR-10: TFDS `cifar10` or the offline `cifar10_subset.npz` copy.

Images are `[N, 32, 32, 3]` float32 in [0, 1] (NHWC, RGB), `input_range=(0, 1)`
so eps is in pixel/255 units (8/255 is the usual L-inf budget).

* TFDS (`source='tfds'`, or 'auto' without a local copy): the official 50,000
  training and 10,000 test images. 'val' is the last `val_fraction` of TFDS's
  fixed training order (TFDS percent slicing), 'train' the rest; `seed` does not
  change this split.
* Local (`cifar10_subset.npz`: JPEG-decoded CIFAR-10 images, so the pixels
  differ from the lossless originals by ~5.9/255 on average): 10,000 training
  images (1,000 per class) and 2,000 official test images (200 per class).
  'val' is carved from the training part, stratified by class, with `seed`.
  **These images were JPEG-decoded** (quality ~75): their pixels differ from
  the originals by about 5.9/255 on average, comparable to eps = 8/255, so
  robustness numbers are not directly comparable with published CIFAR-10
  figures. The extra split 'png_check' holds 200 lossless originals (the first
  200 images of `data_batch_1`) to measure that gap.
"""

from __future__ import annotations

import functools

import numpy as np

from tinyrobust import fileio
from tinyrobust import tf_setup
from tinyrobust.data import base
from tinyrobust.data import signal
from tinyrobust.data import sources
from tinyrobust.data import streaming

FILENAME = 'cifar10_subset.npz'
TFDS_NAME = 'cifar10'
LABEL_NAMES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog',
               'horse', 'ship', 'truck')
SPLITS = ('train', 'val', 'test', 'png_check')
JPEG_NOTE = (
    'offline subset: main images are JPEG-decoded (quality ~75; mean abs '
    'error 5.9/255 vs the lossless originals, comparable to eps=8/255); '
    "'png_check' holds 200 lossless originals")


@functools.lru_cache(maxsize=2)
def _npz(path: str) -> dict[str, np.ndarray]:
  return fileio.load_npz(path)


def _check(seed, val_fraction):
  return base.check_seed(seed), base.check_fraction('val_fraction',
                                                    val_fraction)


def _tfds_split(split: str, val_fraction: float) -> str:
  cut = round(100.0 * (1.0 - val_fraction), 6)
  return {'train': f'train[:{cut}%]', 'val': f'train[{cut}%:]',
          'test': 'test'}[split]


def _tfds_protocol(split, val_fraction):
  return (f'TFDS cifar10 split {_tfds_split(split, val_fraction)!r} (val = '
          f'last {val_fraction:.0%} of the official training order)')


def _local_indices(d, split, seed, val_fraction):
  tr, va = base.stratified_split(d['y_train'].astype(np.int32),
                                 (1.0 - val_fraction, val_fraction), seed)
  return tr if split == 'train' else va


def _local(path: str, split: str, seed: int, val_fraction: float):
  d = _npz(path)
  if split == 'test':
    x, y, idx = d['x_test'], d['y_test'], None
    protocol = 'official CIFAR-10 test images (200 per class subset)'
  elif split == 'png_check':
    x, y, idx = d['x_png_check'], d['y_png_check'], None
    protocol = ('200 lossless PNG originals (first 200 of data_batch_1); their '
                'JPEG versions are x_train rows png_check_train_pos')
  else:
    idx = _local_indices(d, split, seed, val_fraction)
    x, y = d['x_train'][idx], d['y_train'][idx]
    protocol = (f'official CIFAR-10 training images (1,000 per class subset), '
                f'stratified {1 - val_fraction:.2f}/{val_fraction} train/val, '
                f'seed {seed}')
  return x, y, idx, protocol


@base.register_source('cifar10', splits=SPLITS)
def cifar10(split: str, source: str = 'auto', data_dir: str | None = None,
            tfds_data_dir: str | None = None, download: bool = True,
            seed: int = 0, val_fraction: float = 0.1,
            max_train: int = 0) -> base.Dataset:
  """CIFAR-10 images `[N, 32, 32, 3]` float32 in [0, 1].

  Args:
    split: 'train', 'val', 'test', or 'png_check' (local copy only).
    source: 'auto', 'local' or 'tfds' (see `tinyrobust.data.sources`).
    data_dir: folder with `cifar10_subset.npz` (else $TINYROBUST_DATA_DIR).
    tfds_data_dir: TFDS data folder.
    download: allow TFDS to download.
    seed: seed of the stratified train/val split of the local copy.
    val_fraction: share of the training images held out as 'val'.
    max_train: > 0: the 'train' split is a stratified subset of this many
      images (seeded by `seed`; for quick runs on a CPU, said in `protocol`);
      0: all of it. Other splits are unchanged.

  Returns:
    The split; `meta` holds `source`, `protocol`, `note` and, for the local
    copy, the row `indices` into `x_train`.
  """
  seed, val_fraction = _check(seed, val_fraction)
  if isinstance(max_train, bool) or not isinstance(
      max_train, (int, np.integer)) or max_train < 0:
    raise ValueError(f'max_train must be an int >= 0 (0: every training '
                     f'image), got {max_train!r}.')
  path = sources.resolve('cifar10', source, FILENAME, data_dir, TFDS_NAME)
  meta = dict(layout='NHWC [N, 32, 32, 3] RGB', normalisation='pixel/255')
  if path is None:
    if split == 'png_check':
      raise ValueError("split 'png_check' exists only in the local copy "
                       f'{FILENAME}; TFDS has train/val/test.')
    builder = sources.tfds_builder('cifar10', TFDS_NAME,
                                   tfds_data_dir=tfds_data_dir,
                                   download=download, filename=FILENAME,
                                   data_dir=data_dir)
    ds = builder.as_dataset(split=_tfds_split(split, val_fraction),
                            as_supervised=True, shuffle_files=False)
    x, y = streaming.tf_to_numpy(ds)
    meta.update(source=f'tfds:{TFDS_NAME}', protocol=_tfds_protocol(
        split, val_fraction), note='official lossless CIFAR-10 images')
  else:
    x, y, idx, protocol = _local(path, split, seed, val_fraction)
    meta.update(source=path, protocol=protocol, note=JPEG_NOTE)
    if idx is not None:
      meta['indices'] = idx.tolist()
  if split == 'train' and 0 < max_train < len(y):
    keep = base.stratified_split(np.asarray(y), (max_train / len(y), 1 - (
        max_train / len(y))), seed)[0]
    x, y = np.asarray(x)[keep], np.asarray(y)[keep]
    meta['protocol'] += f'; a stratified subset of {len(keep)} of them'
    if 'indices' in meta:
      meta['indices'] = [meta['indices'][i] for i in keep]
  return base.Dataset(x=np.asarray(x, np.float32) / 255.0, y=y,
                      label_names=LABEL_NAMES, input_range=(0.0, 1.0),
                      meta=meta)


@signal.register_space('cifar10')
def _space(options) -> signal.SpaceSpec:
  """Pixels in [0, 1]: the signal is the model input."""
  del options
  return signal.SpaceSpec(signal.PIXEL_UNITS, signal.PIXEL_UNITS,
                          ('red', 'green', 'blue'), signal.identity_problem)


@streaming.register_stream('cifar10')
def _stream(split, batch_size, shuffle_seed, drop_remainder, source='auto',
            data_dir=None, tfds_data_dir=None, download=True, seed=0,
            val_fraction=0.1):
  """TFDS images read lazily; None (serve via load) for the local copy."""
  _, val_fraction = _check(seed, val_fraction)
  if sources.resolve('cifar10', source, FILENAME, data_dir,
                     TFDS_NAME) is not None or split == 'png_check':
    return None
  builder = sources.tfds_builder('cifar10', TFDS_NAME,
                                 tfds_data_dir=tfds_data_dir,
                                 download=download, filename=FILENAME,
                                 data_dir=data_dir)
  tf = tf_setup.import_tf()
  ds = builder.as_dataset(split=_tfds_split(split, val_fraction),
                          as_supervised=True, shuffle_files=False)
  ds = ds.map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y))
  return streaming.tf_batches(ds, batch_size, shuffle_seed, drop_remainder)
