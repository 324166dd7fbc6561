"""Tests for `tinyrobust.data.stream` (lazy batches, same options as load)."""

import numpy as np
import pytest

from tinyrobust import data


def test_fallback_stream_equals_load_batches():
  ds = data.load('digits', 'val')
  got = list(data.stream('digits', 'val', 50))
  assert [len(y) for _, y in got][:-1] == [50] * (len(got) - 1)
  np.testing.assert_array_equal(np.concatenate([x for x, _ in got]), ds.x)
  shuffled = list(data.stream('digits', 'val', 50, shuffle_seed=0,
                              drop_remainder=True))
  assert all(len(y) == 50 for _, y in shuffled)
  ys = np.concatenate([y for _, y in shuffled])
  assert not np.array_equal(ys, ds.y[:len(ys)])
  again = np.concatenate([y for _, y in data.stream(
      'digits', 'val', 50, shuffle_seed=0, drop_remainder=True)])
  np.testing.assert_array_equal(ys, again)


def test_stream_auritus_local(shared_data_dir):
  kw = dict(data_dir=shared_data_dir, window=300, stride=300)
  ds = data.load('auritus', 'test', **kw)
  xs = [x for x, _ in data.stream('auritus', 'test', 128, **kw)]
  assert xs[0].shape == (128, 300, 6)
  np.testing.assert_array_equal(np.concatenate(xs), ds.x)


def test_stream_rejects_bad_arguments():
  with pytest.raises(ValueError, match='holdout'):
    data.stream('digits', 'holdout', 8)
  with pytest.raises(ValueError, match='windowz'):
    data.stream('auritus', 'train', 8, windowz=3)
  with pytest.raises(ValueError, match='Unknown dataset'):
    data.stream('mnist', 'train', 8)
