"""Misuse sweep, data: the data loaders (`tinyrobust.data.load`): names,
splits, options and corrupt or missing files.
"""

from __future__ import annotations

import os

import pytest

from tests.misuse import sweep

Case, pkg = sweep.Case, sweep.pkg


def _load(name, split='test', **kw):
  def fn(ctx):
    del ctx
    data = pkg('tinyrobust.data')
    return data.load(name, split, **kw)
  return fn


def _corrupt_npz(ctx):
  data = pkg('tinyrobust.data')
  d = ctx.path('bad_data')
  os.makedirs(d)
  with open(os.path.join(d, 'cifar10_subset.npz'), 'wb') as f:
    f.write(b'PK\x03\x04 truncated download')
  return data.load('cifar10', 'test', source='local', data_dir=d)


def _data_cases() -> list[Case]:
  g = 'data'
  missing = (ValueError, TypeError, FileNotFoundError)
  return [
      Case('dataset_unknown', g, _load('mnist2'), ("'mnist2'",)),
      Case('split_typo', g, _load('digits', 'tes'), ("'tes'",)),
      Case('seed_negative', g, _load('digits', seed=-1), ('-1',)),
      Case('seed_fraction', g, _load('digits', seed=1.5), ('1.5',)),
      Case('option_unknown', g, _load('digits', sed=1), ('sed',)),
      Case('cifar_source_typo', g, _load('cifar10', source='tfsd'),
           ("'tfsd'",)),
      Case('cifar_local_missing', g, _load(
          'cifar10', source='local', data_dir='/nonexistent/dir'),
           ('cifar10_subset.npz',), ok=missing),
      Case('cifar_val_fraction', g, _load('cifar10', val_fraction=1.5),
           ('1.5',)),
      Case('cifar_max_train_fraction', g, _load('cifar10', max_train=0.5),
           ('0.5', 'max_train')),
      Case('cifar_corrupt_npz', g, _corrupt_npz, ('cifar10_subset.npz',)),
      Case('speech_features_typo', g, _load(
          'speech_commands', features='mfccs'), ("'mfccs'",), ok=missing),
      Case('auritus_split_by_typo', g, _load('auritus', split_by='persons'),
           ("'persons'",), ok=missing),
  ]


CASES = _data_cases()


@pytest.mark.parametrize('case', CASES, ids=sweep.ids(CASES))
def test_data_misuse(case, misuse_ctx):
  sweep.check(case, misuse_ctx)
