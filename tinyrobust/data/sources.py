"""Choosing where a real dataset comes from: a local `.npz` copy or TFDS.

Every real-data source takes the same options:

* `source='auto'|'local'|'tfds'`: 'auto' uses the local file when it is found
  (in `data_dir`, then in `$TINYROBUST_DATA_DIR`), otherwise TensorFlow
  Datasets, which downloads and prepares the set on first use when a network
  is available.
* `data_dir`: folder holding the local `.npz` copies.
* `tfds_data_dir`: TFDS data folder (None: TFDS's default, `$TFDS_DATA_DIR` or
  `~/tensorflow_datasets`).
* `download`: let TFDS download when the set is not prepared yet.

When nothing is available the loader raises `DataNotFoundError`, whose message
lists every option that would make the call work.
"""

from __future__ import annotations

import os

from tinyrobust import tf_setup
from tinyrobust.data import base

SOURCE_KINDS = ('auto', 'local', 'tfds')


class DataNotFoundError(FileNotFoundError):
  """No local copy, no prepared TFDS data and no way to download them."""


def _where_looked(data_dir: str | None) -> str:
  env = os.environ.get(base.DATA_DIR_ENV)
  return (f'data_dir={data_dir!r}, ${base.DATA_DIR_ENV}='
          f'{env if env else "(unset)"}')


def not_found_message(dataset: str, filename: str | None,
                      tfds_name: str | None, data_dir: str | None,
                      reason: str = '') -> str:
  """The text of `DataNotFoundError`: what was tried and what would work."""
  lines = [f'No data for dataset {dataset!r}.' + (f' {reason}' if reason
                                                   else '')]
  fixes = []
  if filename:
    lines.append(f'Looked for {filename!r} in: {_where_looked(data_dir)}.')
    fixes.append(f'set {base.DATA_DIR_ENV}=/path/to/folder/with/{filename}')
    fixes.append(f"pass data_dir='/path/to/folder/with/{filename}'")
  if tfds_name:
    fixes.append(f"connect to the network so TFDS can download '{tfds_name}' "
                 "(source='tfds' or 'auto', download=True)")
    fixes.append(f"pass tfds_data_dir= a folder where '{tfds_name}' is "
                 'already prepared')
  lines.append('Any one of these makes it work: ' + '; '.join(
      f'({i + 1}) {f}' for i, f in enumerate(fixes)) + '.')
  return ' '.join(lines)


def check_source(source: str) -> str:
  if source not in SOURCE_KINDS:
    raise ValueError(f'Unknown source {source!r}. Valid: '
                     f'{", ".join(SOURCE_KINDS)}.')
  return source


def resolve(dataset: str, source: str, filename: str,
            data_dir: str | None, tfds_name: str | None) -> str | None:
  """Returns the local file path to use, or None to use TFDS.

  Raises:
    ValueError: unknown `source`.
    DataNotFoundError: `source='local'` and the file is not found, or
      `source='tfds'` for a dataset TFDS does not have.
  """
  check_source(source)
  if source == 'tfds':
    if tfds_name is None:
      raise ValueError(f"Dataset {dataset!r} has no TFDS source; use "
                       "source='local' or 'auto'.")
    return None
  path = base.find_local_file(filename, data_dir)
  if path is None and data_dir and not os.path.isdir(
      os.path.expanduser(data_dir)):  # a typo: fail before any download
    raise DataNotFoundError(not_found_message(
        dataset, filename, None, data_dir,
        reason=f'data_dir={data_dir!r} does not exist.'))
  if path is None and (source == 'local' or tfds_name is None):
    raise DataNotFoundError(not_found_message(
        dataset, filename, None if source == 'local' else tfds_name,
        data_dir))
  return path


def tfds_builder(dataset: str, tfds_name: str, *, tfds_data_dir: str | None,
                 download: bool, filename: str | None = None,
                 data_dir: str | None = None):
  """A prepared TFDS builder, downloading first when allowed.

  Raises:
    DataNotFoundError: not prepared and `download=False`, or the download
      failed (e.g. no network); the message lists what would work.
  """
  tf_setup.import_tf()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(tfds_name, data_dir=tfds_data_dir)
  if download:
    try:
      builder.download_and_prepare()
    except Exception as e:  # pylint: disable=broad-except
      raise DataNotFoundError(not_found_message(
          dataset, filename, tfds_name, data_dir,
          reason=f'TFDS could not download/prepare {tfds_name!r}: '
          f'{type(e).__name__}: {e}.')) from e
  elif not builder.is_prepared():
    raise DataNotFoundError(not_found_message(
        dataset, filename, tfds_name, data_dir,
        reason=f'TFDS {tfds_name!r} is not prepared in '
        f'{builder.data_dir!r} and download=False.'))
  return builder
