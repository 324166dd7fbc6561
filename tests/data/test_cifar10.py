"""Tests for the CIFAR-10 source (local copy, TFDS mock, missing data)."""

import numpy as np
import pytest

from tinyrobust import data
from tinyrobust.data import cifar10
from tinyrobust.data import sources


def test_local_splits(shared_data_dir):
  tr = data.load('cifar10', 'train', source='local')
  va = data.load('cifar10', 'val', source='local')
  te = data.load('cifar10', 'test', data_dir=shared_data_dir)
  assert (len(tr), len(va), len(te)) == (9000, 1000, 2000)
  for ds in (tr, va, te):
    assert ds.x.dtype == np.float32 and ds.x.shape[1:] == (32, 32, 3)
    assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0
    assert ds.input_range == (0.0, 1.0)
    assert 'JPEG' in ds.meta['note']
  assert set(va.class_counts().values()) == {100}
  assert not set(tr.meta['indices']) & set(va.meta['indices'])
  again = data.load('cifar10', 'val', source='local', seed=0)
  np.testing.assert_array_equal(again.x, va.x)
  other = data.load('cifar10', 'val', source='local', seed=1)
  assert other.meta['indices'] != va.meta['indices']


def test_max_train_is_a_seeded_stratified_subset_of_train_only(
    shared_data_dir):
  full = data.load('cifar10', 'train', data_dir=shared_data_dir)
  sub = data.load('cifar10', 'train', data_dir=shared_data_dir,
                  max_train=1000)
  assert len(sub) == 1000 and set(sub.class_counts().values()) == {100}
  assert set(sub.meta['indices']) <= set(full.meta['indices'])
  rows = {i: k for k, i in enumerate(full.meta['indices'])}
  k = [rows[i] for i in sub.meta['indices'][:5]]
  np.testing.assert_array_equal(sub.x[:5], full.x[k])
  assert '1000' in sub.meta['protocol']
  again = data.load('cifar10', 'train', data_dir=shared_data_dir,
                    max_train=1000)
  assert again.meta['indices'] == sub.meta['indices']
  test = data.load('cifar10', 'test', data_dir=shared_data_dir,
                   max_train=1000)
  assert len(test) == 2000  # other splits unchanged
  with pytest.raises(ValueError, match='max_train.*-1'):
    data.load('cifar10', 'train', data_dir=shared_data_dir, max_train=-1)


def test_png_check_matches_its_jpeg_rows(shared_data_dir):
  png = data.load('cifar10', 'png_check', data_dir=shared_data_dir)
  assert len(png) == 200
  full = cifar10._npz(  # pylint: disable=protected-access
      f'{shared_data_dir}/{cifar10.FILENAME}')
  jpeg = full['x_train'][full['png_check_train_pos']] / 255.0
  err = np.abs(png.x - jpeg).mean()
  assert 1 / 255 < err < 10 / 255  # the documented JPEG gap (~5.9/255)


def test_tfds_mock():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=6):
    ds = data.load('cifar10', 'val', source='tfds')
    streamed = list(data.stream('cifar10', 'train', 4, source='tfds'))
  assert ds.x.shape == (6, 32, 32, 3) and ds.x.dtype == np.float32
  assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0 and ds.x.max() > 0.1
  assert ds.meta['source'] == 'tfds:cifar10'
  assert "train[90.0%:]" in ds.meta['protocol']
  assert [b[0].shape[0] for b in streamed] == [4, 2]
  assert streamed[0][0].dtype == np.float32
  with pytest.raises(ValueError, match='png_check'):
    data.load('cifar10', 'png_check', source='tfds')


def test_tfds_split_specs_parse():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  for split in ('train', 'val'):
    spec = cifar10._tfds_split(split, 0.1)  # pylint: disable=protected-access
    tfds.core.ReadInstruction.from_spec(spec)


def test_stream_local_equals_load(shared_data_dir):
  ds = data.load('cifar10', 'test', data_dir=shared_data_dir)
  xs, ys = zip(*data.stream('cifar10', 'test', 512, data_dir=shared_data_dir))
  np.testing.assert_array_equal(np.concatenate(xs), ds.x)
  np.testing.assert_array_equal(np.concatenate(ys), ds.y)


def test_missing_data_error_lists_fixes(tmp_path, monkeypatch):
  monkeypatch.delenv('TINYROBUST_DATA_DIR', raising=False)
  with pytest.raises(sources.DataNotFoundError) as e:
    data.load('cifar10', 'train', data_dir=str(tmp_path), download=False,
              tfds_data_dir=str(tmp_path / 'tfds'))
  msg = str(e.value)
  for fix in ('TINYROBUST_DATA_DIR=', 'data_dir=', 'network', 'tfds_data_dir'):
    assert fix in msg
  with pytest.raises(sources.DataNotFoundError, match='data_dir'):
    data.load('cifar10', 'train', source='local', data_dir=str(tmp_path))


def test_failed_download_is_reported(tmp_path, monkeypatch):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv('TINYROBUST_DATA_DIR', raising=False)

  def offline(self, *a, **k):
    raise ConnectionError('network is unreachable')

  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare',
                      offline)
  with pytest.raises(sources.DataNotFoundError,
                     match='unreachable.*TINYROBUST_DATA_DIR'):
    data.load('cifar10', 'test', data_dir=str(tmp_path),
              tfds_data_dir=str(tmp_path))


def test_bad_options():
  with pytest.raises(ValueError, match='source'):
    data.load('cifar10', 'train', source='web')
  with pytest.raises(ValueError, match='val_fraction'):
    data.load('cifar10', 'train', val_fraction=1.5)
  with pytest.raises(ValueError, match='batch_size'):
    data.stream('cifar10', 'train', 0)


def test_named_data_dir_is_never_silently_replaced(tmp_path, shared_data_dir,
                                                    monkeypatch):
  """With $TINYROBUST_DATA_DIR holding the file, a data_dir the user named
  that lacks it (or does not exist) is an error, not the env's data."""
  monkeypatch.setenv('TINYROBUST_DATA_DIR', shared_data_dir)
  missing = str(tmp_path / 'nope')
  for source in ('auto', 'local'):
    with pytest.raises(sources.DataNotFoundError, match='nope'):
      data.load('cifar10', 'test', source=source, data_dir=missing)
  with pytest.raises(sources.DataNotFoundError, match=str(tmp_path)):
    data.load('cifar10', 'test', source='local', data_dir=str(tmp_path))
