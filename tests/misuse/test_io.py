"""Misuse sweep, io: checkpoints, configs, journals and data files that are
damaged, and a workdir that is a file.
"""

from __future__ import annotations

import os

import pytest

from tests.misuse import sweep

Case, pkg = sweep.Case, sweep.pkg


def _damaged(name: str, data: bytes, loader: str):
  def fn(ctx):
    io = pkg('tinyrobust.fileio')
    d = ctx.path('io')
    os.makedirs(d)
    p = os.path.join(d, name)
    if loader == 'ckpt':
      io.save_pytree(p, {'a': [1.0, 2.0], 'epoch': 3})
      with open(p, 'rb') as f:
        good = f.read()
      data2 = {'truncate': good[:len(good) // 2], 'extra': good + b'xx'}.get(
          data.decode(), data)
    else:
      data2 = data
    with open(p, 'wb') as f:
      f.write(data2)
    return getattr(io, {'ckpt': 'load_pytree', 'json': 'read_json',
                        'jsonl': 'read_jsonl', 'npz': 'load_npz'}[loader])(p)
  return fn


def _workdir_is_file(ctx):
  p = ctx.path('a_file')
  with open(p, 'w') as f:
    f.write('x')
  io = pkg('tinyrobust.fileio')
  return io.check_writable_dir(p)


def _io_cases() -> list[Case]:
  g = 'io'
  return [
      Case('ckpt_truncated', g, _damaged('latest.ckpt', b'truncate', 'ckpt'),
           ('latest.ckpt',)),
      Case('ckpt_extra_data', g, _damaged('latest.ckpt', b'extra', 'ckpt'),
           ('latest.ckpt',)),
      Case('ckpt_zip_garbage', g, _damaged('best.ckpt', b'PK\x03\x04xx',
                                           'ckpt'), ('best.ckpt',)),
      Case('ckpt_empty', g, _damaged('best.ckpt', b'', 'ckpt'),
           ('best.ckpt',)),
      Case('config_json_truncated', g, _damaged(
          'config.json', b'{"model": {"name": "cnn"', 'json'),
           ('config.json',)),
      Case('config_json_binary', g, _damaged('config.json', b'\xff\xfe\x00{',
                                             'json'), ('config.json',)),
      Case('metrics_middle_garbage', g, _damaged(
          'metrics.jsonl', b'{"epoch": 1}\ngarbage\n{"epoch": 2}\n', 'jsonl'),
           ('metrics.jsonl', 'line 2')),
      Case('npz_truncated', g, _damaged('data.npz', b'PK\x03\x04abc', 'npz'),
           ('data.npz',)),
      Case('workdir_is_file', g, _workdir_is_file, ('a_file',)),
  ]


CASES = _io_cases()


@pytest.mark.parametrize('case', CASES, ids=sweep.ids(CASES))
def test_io_misuse(case, misuse_ctx):
  sweep.check(case, misuse_ctx)
