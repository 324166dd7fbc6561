"""Built-in loaders: shapes, dtypes, ranges, deterministic splits, bad input."""

import numpy as np
import pytest

from tinyrobust import data


def test_registry_lists_builtins():
  assert {'digits', 'basic_motions'} <= set(data.list_datasets())


@pytest.mark.parametrize('split,n', [('train', 1258), ('val', 180),
                                     ('test', 359)])
def test_digits_shapes_and_range(split, n):
  ds = data.load('digits', split)
  assert ds.x.shape == (n, 8, 8, 1) and ds.x.dtype == np.float32
  assert ds.y.shape == (n,) and ds.y.dtype == np.int32
  assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0 and ds.x.max() == 1.0
  assert ds.input_range == (0.0, 1.0)
  assert ds.num_classes == 10 and set(np.unique(ds.y)) == set(range(10))
  assert 'protocol' in ds.meta and 'source' in ds.meta


def test_digits_splits_disjoint_cover_and_stratified():
  parts = [set(data.load('digits', s).meta['indices'])
           for s in ('train', 'val', 'test')]
  assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
  assert len(parts[0] | parts[1] | parts[2]) == 1797
  counts = np.bincount(data.load('digits', 'test').y)
  assert counts.max() - counts.min() <= 2  # stratified: ~36 per class


def test_digits_deterministic_for_seed_and_varies_across_seeds():
  a, b = data.load('digits', 'val', seed=3), data.load('digits', 'val', seed=3)
  np.testing.assert_array_equal(a.x, b.x)
  c = data.load('digits', 'val', seed=4)
  assert a.meta['indices'] != c.meta['indices']


def test_basic_motions_layout_and_normalisation():
  tr = data.load('basic_motions', 'train')
  va = data.load('basic_motions', 'val')
  te = data.load('basic_motions', 'test')
  assert tr.x.shape == (32, 100, 6) and va.x.shape == (8, 100, 6)
  assert te.x.shape == (40, 100, 6) and te.y.dtype == np.int32
  assert te.class_counts() == {n: 10 for n in te.label_names}
  # Standardised with train statistics: train part is zero-mean, unit-std.
  np.testing.assert_allclose(tr.x.mean(axis=(0, 1)), 0.0, atol=1e-4)
  np.testing.assert_allclose(tr.x.std(axis=(0, 1)), 1.0, atol=1e-3)
  raw = data.load('basic_motions', 'train', normalisation='none')
  np.testing.assert_allclose(
      (raw.x - np.array(tr.meta['train_mean'])) /
      np.array(tr.meta['train_std']), tr.x, atol=1e-4)


@pytest.mark.parametrize('call,match', [
    (lambda: data.load('mnist', 'train'), "Unknown dataset 'mnist'.*digits"),
    (lambda: data.load('digits', 'dev'), "Unknown split 'dev'.*train, val"),
    (lambda: data.load('digits', 'train', colour=True),
     r"Unknown option\(s\) \['colour'\].*seed"),
    (lambda: data.load('digits', 'train', seed=-1), 'seed must be'),
    (lambda: data.load('digits', 'train', val_fraction=1.5), 'val_fraction'),
    (lambda: data.load('basic_motions', 'train', normalisation='minmax'),
     "Unknown normalisation 'minmax'"),
])
def test_bad_input_rejected_with_valid_choices(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_source_registry_lists_each_sources_options():
  from tinyrobust.data import base  # pylint: disable=g-import-not-at-top
  assert base.SOURCES.options('digits') == ('seed', 'val_fraction',
                                            'test_fraction')
  assert 'normalisation' in base.SOURCES.options('basic_motions')
