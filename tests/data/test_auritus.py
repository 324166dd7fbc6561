"""Tests for the AURITUS source: splits, protocols, channels, CSV/download."""

import logging
import os
import urllib.error

import numpy as np
import pytest

from tinyrobust import data
from tinyrobust.data import auritus
from tinyrobust.data import har_features
from tinyrobust.data import sources


def _splits(**kw):
  return {s: data.load('auritus', s, **kw) for s in ('train', 'val', 'test')}


def test_participant_splits_are_disjoint_and_fixed(shared_data_dir):
  sp = _splits(data_dir=shared_data_dir)
  parts = [set(d.meta['participants']) for d in sp.values()]
  assert [len(p) for p in parts] == [29, 7, 9]
  assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
  assert parts[0] | parts[1] | parts[2] == set(range(1, 46))
  for d in sp.values():
    assert d.x.shape[1:] == (550, 6) and d.x.dtype == np.float32
    lo, hi = np.array(d.meta['channel_range']['lo']), np.array(
        d.meta['channel_range']['hi'])
    np.testing.assert_allclose(hi, [4.0] * 3 + [500.0] * 3, atol=0.3)
    np.testing.assert_allclose(lo, -hi, atol=0.02)
    assert d.input_range == (lo.min(), hi.max())
    assert np.all((lo <= d.x) & (d.x <= hi))
    assert set(np.unique(d.y)) == set(range(9))
  auritus._prepared.cache_clear()  # pylint: disable=protected-access
  again = data.load('auritus', 'test', data_dir=shared_data_dir)
  assert again.meta['participants'] == sp['test'].meta['participants']
  np.testing.assert_array_equal(again.x, sp['test'].x)
  other = data.load('auritus', 'test', data_dir=shared_data_dir, seed=1)
  assert other.meta['participants'] != sp['test'].meta['participants']


def test_study_window_protocol(shared_data_dir, caplog):
  with caplog.at_level(logging.WARNING):
    sp = _splits(data_dir=shared_data_dir, rate_hz=None, split_by='window',
                 val_fraction=0.1, test_fraction=0.1)
  assert 'LEAKY' in sp['test'].meta['protocol']
  assert any('optimistic' in r.getMessage() for r in caplog.records)
  # The study's loader gives 14,671 + 300 = 14,971 windows of 550 rows.
  assert sum(len(d) for d in sp.values()) == 14971
  assert len(sp['test'].meta['participants']) == 45
  leaked = set(sp['train'].meta['recordings']) & set(
      sp['test'].meta['recordings'])
  assert len(leaked) > 100  # the same recordings feed train and test


def test_channels_and_features(shared_data_dir):
  kw = dict(data_dir=shared_data_dir, window=300, stride=300)
  raw = data.load('auritus', 'val', **kw)
  mag = data.load('auritus', 'val', channels='magnitudes', **kw)
  assert mag.x.shape == raw.x.shape[:2] + (2,)
  np.testing.assert_allclose(mag.x[..., 0],
                             np.linalg.norm(raw.x[..., :3], axis=-1),
                             rtol=1e-5)
  tr = data.load('auritus', 'train', channels='features', **kw)
  feat = data.load('auritus', 'val', channels='features', **kw)
  assert feat.x.shape == (len(raw), 10) and feat.input_range is None
  assert feat.meta['normalisation'] == 'standardise'
  np.testing.assert_allclose(tr.x.mean(0), 0.0, atol=1e-3)
  np.testing.assert_allclose(tr.x.std(0), 1.0, atol=1e-3)
  mean, std = np.array(feat.meta['train_mean']), np.array(
      feat.meta['train_std'])
  np.testing.assert_allclose(
      feat.x * std + mean, np.asarray(har_features.window_features(raw.x)),
      rtol=1e-4, atol=1e-3)
  unnorm = data.load('auritus', 'val', channels='features',
                     normalisation='none', **kw)
  np.testing.assert_allclose(unnorm.x, feat.x * std + mean, rtol=1e-4,
                             atol=1e-3)


def _write_csvs(npz_path, folder, participants):
  recs = auritus.read_npz(npz_path)
  names = []
  for i, (p, lab) in enumerate(zip(recs.participant, recs.label)):
    if p in participants:
      name = f'{p}_{auritus.LABEL_CODES[lab]}.csv'
      a = np.column_stack([recs.signals[i], recs.t_ms[i] / 1000.0])
      np.savetxt(os.path.join(folder, name), a, delimiter=',',
                 fmt=['%.9g'] * 6 + ['%.3f'])
      names.append((i, name))
  return recs, names


def test_csv_folder_matches_npz(shared_data_dir, tmp_path):
  npz = os.path.join(shared_data_dir, auritus.FILENAME)
  recs, names = _write_csvs(npz, tmp_path, {1, 2, 3, 4, 5})
  (tmp_path / 'README.md').write_text('not a recording')
  got = auritus.read_csv_dir(str(tmp_path))
  assert len(got.signals) == len(names) == 44
  for j, (i, _) in enumerate(names):
    np.testing.assert_array_equal(got.t_ms[j], recs.t_ms[i])
    np.testing.assert_allclose(got.signals[j], recs.signals[i], rtol=1e-6)
    assert (got.participant[j], got.label[j]) == (recs.participant[i],
                                                  recs.label[i])
  ds = data.load('auritus', 'test', source='csv', csv_dir=str(tmp_path),
                 window=200, stride=100)
  assert len(ds.meta['participants']) == 1 and ds.x.shape[1:] == (200, 6)


def test_download_with_a_fake_server(shared_data_dir, tmp_path, monkeypatch):
  src = tmp_path / 'server'
  src.mkdir()
  _, names = _write_csvs(os.path.join(shared_data_dir, auritus.FILENAME), src,
                         {2})
  wanted = [n for _, n in names]
  monkeypatch.setattr(auritus, 'expected_files', lambda: wanted)
  urls = []

  def fake_urlopen(url, timeout):
    del timeout
    urls.append(url)
    return open(src / url.rsplit('/', 1)[1], 'rb')

  monkeypatch.setattr(auritus.urllib.request, 'urlopen', fake_urlopen)
  out = auritus.download(str(tmp_path / 'dl'))
  assert sorted(os.listdir(out)) == sorted(wanted)
  assert urls[0].startswith(auritus.REPO_URL) and len(urls) == 9
  assert (src / wanted[0]).read_bytes() == (tmp_path / 'dl' /
                                            wanted[0]).read_bytes()
  auritus.download(str(tmp_path / 'dl'))
  assert len(urls) == 9  # cached files are not fetched again


def test_offline_errors_list_the_fixes(tmp_path, monkeypatch):
  monkeypatch.delenv('TINYROBUST_DATA_DIR', raising=False)

  def offline(url, timeout):
    raise urllib.error.URLError('no network')

  monkeypatch.setattr(auritus.urllib.request, 'urlopen', offline)
  with pytest.raises(sources.DataNotFoundError) as e:
    data.load('auritus', 'train', data_dir=str(tmp_path),
              download_dir=str(tmp_path / 'dl'))
  msg = str(e.value)
  for fix in ('no network', 'TINYROBUST_DATA_DIR=', 'data_dir=', 'csv_dir=',
              'network'):
    assert fix in msg
  with pytest.raises(sources.DataNotFoundError, match='download=False'):
    data.load('auritus', 'train', data_dir=str(tmp_path), download=False)


def test_bad_options():
  for kw, word in ((dict(channels='acc'), 'channels'),
                   (dict(split_by='subject'), 'split_by'),
                   (dict(normalisation='minmax'), 'normalisation'),
                   (dict(window=0), 'window'), (dict(rate_hz=-1), 'rate_hz'),
                   (dict(source='s3'), 'source')):
    with pytest.raises(ValueError, match=word):
      data.load('auritus', 'train', download=False, **kw)
