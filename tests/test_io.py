"""tinyrobust.fileio: whole-line journals, torn-tail repair, named load errors."""

from __future__ import annotations

import json
import logging
import os
import zipfile

import flax.linen as nn
import jax
import numpy as np
import pytest

from tinyrobust import fileio

RECORDS = [{'epoch': i, 'loss': 1.0 / (i + 1), 'tag': 'x' * i}
           for i in range(4)]


def _write(path, records):
  for r in records:
    fileio.append_jsonl(str(path), r)


def _raw(path):
  with open(path, 'rb') as f:
    return f.read()


# ------------------------------------------------------------ append ----


def test_append_writes_one_whole_line_per_record(tmp_path):
  p = tmp_path / 'm.jsonl'
  _write(p, RECORDS)
  lines = _raw(p).split(b'\n')
  assert lines[-1] == b''  # ends with a newline
  assert [json.loads(l) for l in lines[:-1]] == RECORDS
  assert fileio.read_jsonl(str(p)) == RECORDS


def test_append_of_unserialisable_record_writes_nothing(tmp_path):
  p = tmp_path / 'm.jsonl'
  _write(p, RECORDS[:1])
  before = _raw(p)
  with pytest.raises(TypeError):
    fileio.append_jsonl(str(p), {'bad': object()})
  with pytest.raises(ValueError, match='mapping'):
    fileio.append_jsonl(str(p), ['not', 'a', 'dict'])
  assert _raw(p) == before


def test_kill_at_every_byte_of_an_append_then_resume(tmp_path):
  # A kill can cut the last line at any byte. For every cut, reopening and
  # appending must give: the earlier records, the cut record iff it is whole,
  # then the new record; and the fragment (if any) is kept in `.torn`.
  p = str(tmp_path / 'm.jsonl')
  _write(p, RECORDS)
  full = _raw(p)
  last_start = full.rstrip(b'\n').rfind(b'\n') + 1
  new = {'epoch': 99}
  for cut in range(last_start, len(full) + 1):
    for f in (p, p + fileio.TORN_SUFFIX):
      if os.path.exists(f):
        os.remove(f)
    with open(p, 'wb') as f:
      f.write(full[:cut])
    fileio.append_jsonl(p, new)
    got = fileio.read_jsonl(p)
    whole = cut >= len(full) - 1  # only the newline (or nothing) missing
    assert got == RECORDS[:3] + ([RECORDS[3]] if whole else []) + [new], cut
    assert _raw(p).endswith(b'\n')
    fragment = full[last_start:cut]
    if whole or not fragment:
      assert not os.path.exists(p + fileio.TORN_SUFFIX), cut
    else:
      assert _raw(p + fileio.TORN_SUFFIX) == fragment + b'\n', cut


# ------------------------------------------------------- torn tails -----


def _tear(path, keep_chars):
  """Cuts the file's last line to its first `keep_chars` characters."""
  data = _raw(path).rstrip(b'\n')
  start = data.rfind(b'\n') + 1
  with open(path, 'wb') as f:
    f.write(data[:start + keep_chars])
  return data[start:start + keep_chars]


def test_read_without_repair_skips_torn_tail_and_leaves_file(tmp_path,
                                                            caplog):
  p = str(tmp_path / 'm.jsonl')
  _write(p, RECORDS)
  _tear(p, 10)
  before = _raw(p)
  with caplog.at_level(logging.WARNING):
    assert fileio.read_jsonl(p) == RECORDS[:3]
  assert _raw(p) == before
  assert not os.path.exists(p + fileio.TORN_SUFFIX)
  assert 'line 4' in caplog.text and p in caplog.text


def test_repair_moves_torn_tail_aside_and_truncates(tmp_path, caplog):
  p = str(tmp_path / 'm.jsonl')
  _write(p, RECORDS)
  fragment = _tear(p, 12)
  with caplog.at_level(logging.WARNING):
    assert fileio.read_jsonl(p, repair=True) == RECORDS[:3]
  assert 'line 4' in caplog.text and p in caplog.text
  assert '.torn' in caplog.text
  assert _raw(p) == b''.join(json.dumps(r, sort_keys=True).encode() + b'\n'
                             for r in RECORDS[:3])
  assert _raw(p + fileio.TORN_SUFFIX) == fragment + b'\n'


def test_repeated_tears_keep_every_fragment(tmp_path):
  p = str(tmp_path / 'm.jsonl')
  _write(p, RECORDS[:2])
  fragments = []
  for i in range(3):
    fileio.append_jsonl(p, {'round': i, 'payload': 'y' * 30})
    fragments.append(_tear(p, 15 + i))
    assert fileio.repair_jsonl(p) == len(fragments[-1])
  assert fileio.repair_jsonl(p) == 0  # already clean
  assert _raw(p + fileio.TORN_SUFFIX) == b''.join(f + b'\n' for f in fragments)
  assert fileio.read_jsonl(p) == RECORDS[:2]


def test_whole_last_record_without_newline_is_kept(tmp_path):
  p = str(tmp_path / 'm.jsonl')
  _write(p, RECORDS[:2])
  with open(p, 'rb+') as f:
    f.truncate(os.path.getsize(p) - 1)  # only the final newline is lost
  assert fileio.read_jsonl(p) == RECORDS[:2]
  assert fileio.read_jsonl(p, repair=True) == RECORDS[:2]
  assert _raw(p).endswith(b'}\n')
  assert not os.path.exists(p + fileio.TORN_SUFFIX)


def test_garbage_last_line_with_newline_counts_as_torn(tmp_path):
  p = str(tmp_path / 'm.jsonl')
  _write(p, RECORDS[:2])
  with open(p, 'ab') as f:
    f.write(b'{"epoch": 2, "lo\n\n')
  assert fileio.read_jsonl(p, repair=True) == RECORDS[:2]
  assert _raw(p + fileio.TORN_SUFFIX) == b'{"epoch": 2, "lo\n'
  fileio.append_jsonl(p, RECORDS[2])
  assert fileio.read_jsonl(p) == RECORDS[:3]


def test_missing_file_reads_empty(tmp_path):
  p = str(tmp_path / 'none.jsonl')
  assert fileio.read_jsonl(p) == [] and fileio.read_jsonl(p, repair=True) == []
  assert fileio.repair_jsonl(p) == 0
  assert not os.path.exists(p)


@pytest.mark.parametrize('bad, reason', [
    (b'{"epoch": 1, "lo', 'not valid JSON'),
    (b'\xff\xfe{"epoch": 1}', 'not UTF-8'),
    (b'[1, 2, 3]', 'list, not an object'),
    (b'{"a": 1}{"epoch": 1}', 'not valid JSON'),  # glued onto a fragment
])
def test_corrupt_middle_line_raises_naming_file_and_line(tmp_path, bad,
                                                         reason):
  p = str(tmp_path / 'm.jsonl')
  _write(p, RECORDS[:2])
  with open(p, 'ab') as f:
    f.write(bad + b'\n')
  _write(p, RECORDS[2:])
  before = _raw(p)
  for fn in (fileio.read_jsonl, lambda q: fileio.read_jsonl(q, repair=True),
             fileio.repair_jsonl):
    with pytest.raises(fileio.CorruptFileError) as e:
      fn(p)
    msg = str(e.value)
    assert p in msg and 'line 3' in msg and reason in msg, msg
    assert 'delete' in msg.lower()
    assert e.value.line == 3 and e.value.path == p
    assert isinstance(e.value, ValueError)
  assert _raw(p) == before  # nothing is dropped or rewritten


def test_jsonl_repaired_on_read_then_appended(tmp_path):
  p = str(tmp_path / 'm.jsonl')
  _write(p, RECORDS[:3])
  _tear(p, 5)
  assert fileio.read_jsonl(p, repair=True) == RECORDS[:2]
  fileio.append_jsonl(p, {'epoch': 7})
  assert fileio.read_jsonl(p, repair=True) == RECORDS[:2] + [{'epoch': 7}]


# ------------------------------------------------- named load errors ----


def _ckpt(tmp_path):
  p = str(tmp_path / 'latest.ckpt')
  fileio.save_pytree(p, {'params': {'w': np.ones((3, 2), np.float32)},
                     'epoch': 4})
  return p


@pytest.mark.parametrize('damage', [
    'truncate', 'extra', 'garbage', 'empty', 'zip', 'scalar'])
def test_load_pytree_names_damaged_file(tmp_path, damage):
  p = _ckpt(tmp_path)
  data = _raw(p)
  data = {'truncate': data[:len(data) // 2], 'extra': data + b'\x00junk',
          'garbage': b'hello world', 'empty': b'',
          'zip': b'PK\x03\x04' + data[:7], 'scalar': b'\x01'}[damage]
  with open(p, 'wb') as f:
    f.write(data)
  with pytest.raises(fileio.CorruptFileError) as e:
    fileio.load_pytree(p)
  msg = str(e.value)
  assert p in msg and 'best.ckpt' in msg and 'Delete' in msg, msg


def test_load_pytree_round_trip_and_structure_checks(tmp_path):
  p = _ckpt(tmp_path)
  target = {'params': {'w': np.zeros((3, 2), np.float32)}, 'epoch': 0}
  got = fileio.load_pytree(p, target, check_shapes=True)
  np.testing.assert_array_equal(got['params']['w'], np.ones((3, 2)))
  assert got['epoch'] == 4
  wrong = {'params': {'w': np.zeros((5, 2), np.float32)}, 'epoch': 0}
  with pytest.raises(fileio.CorruptFileError,
                     match=r'params/w: shape \(5, 2\) expected, got \(3, 2\)'):
    fileio.load_pytree(p, wrong, check_shapes=True)
  other = {'params': {'v': np.zeros((3, 2))}, 'epoch': 0}
  with pytest.raises(fileio.CorruptFileError) as e:
    fileio.load_pytree(p, other)
  assert p in str(e.value)


@pytest.mark.parametrize('data, what', [
    (b'{"model": {"name": "cnn"', 'line 1'),
    (b'{\n  "a": 1,\n  "b": \n}', 'line 4'),
    (b'\xff\xfe\x00{}', 'UnicodeDecodeError'),
])
def test_read_json_names_damaged_file(tmp_path, data, what):
  p = str(tmp_path / 'config.json')
  with open(p, 'wb') as f:
    f.write(data)
  with pytest.raises(fileio.CorruptFileError) as e:
    fileio.read_json(p)
  assert p in str(e.value) and what in str(e.value)
  assert 'delete' in str(e.value).lower()


def test_read_json_round_trip(tmp_path):
  p = str(tmp_path / 'c.json')
  fileio.write_json(p, {'a': np.float32(0.5), 'b': [np.int64(3)]})
  assert fileio.read_json(p) == {'a': 0.5, 'b': [3]}


def test_load_npz_names_damaged_file(tmp_path):
  p = str(tmp_path / 'd.npz')
  np.savez(p, x=np.arange(1000), y=np.ones(3))
  assert fileio.load_npz(p)['y'].tolist() == [1.0, 1.0, 1.0]
  data = _raw(p)
  with open(p, 'wb') as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(fileio.CorruptFileError) as e:
    fileio.load_npz(p)
  assert p in str(e.value) and 're-download' in str(e.value)
  assert isinstance(e.value.__cause__, (zipfile.BadZipFile, EOFError,
                                        ValueError, OSError))


# --------------------------------------------------- workdir checks ----


def test_check_writable_dir(tmp_path):
  f = tmp_path / 'afile'
  f.write_text('x')
  with pytest.raises(ValueError, match='is a regular file') as e:
    fileio.check_writable_dir(str(f))
  assert str(f) in str(e.value)
  with pytest.raises(ValueError, match='is inside .* a regular file'):
    fileio.check_writable_dir(str(f / 'run'))
  new = tmp_path / 'a' / 'b'
  assert fileio.check_writable_dir(str(new)) == str(new)
  assert not new.exists()  # only checked
  assert fileio.check_writable_dir(str(new), create=True) == str(new)
  assert new.is_dir() and os.listdir(new) == []  # probe file removed
  with pytest.raises(ValueError, match='non-empty path'):
    fileio.check_writable_dir('')


@pytest.mark.skipif(not os.path.isdir('/sys') or os.access('/sys', os.W_OK)
                    and os.geteuid() != 0, reason='needs a read-only /sys')
def test_check_writable_dir_read_only():
  try:
    fileio.check_writable_dir('/sys')
  except ValueError as e:
    assert "'/sys' is not writable" in str(e)
  else:
    pytest.skip('/sys is writable here')


# ------------------------------------------------ tree_shape_mismatch ----


def test_tree_shape_mismatch_closed_form():
  a = {'params': {'d0': {'kernel': np.zeros((8, 4)), 'bias': np.zeros(4)},
                  'd1': {'kernel': np.zeros((4, 2))}}, 'step': 0}
  b = {'params': {'d0': {'kernel': np.zeros((6, 4)), 'bias': np.zeros(4)},
                  'extra': np.zeros(1)}, 'step': np.int32(3)}
  assert fileio.tree_shape_mismatch(a, a) == []
  assert fileio.tree_shape_mismatch(a, b) == [
      'params/d0/kernel: shape (8, 4) expected, got (6, 4)',
      'params/d1/kernel: missing',
      'params/extra: unexpected']
  # Leaf vs subtree is a structure difference at both paths.
  assert fileio.tree_shape_mismatch({'a': np.zeros(2)}, {'a': {'b': 1}}) == [
      'a: missing', 'a/b: unexpected']


def test_tree_shape_mismatch_of_two_models_and_a_checkpoint(tmp_path):
  x = np.zeros((1, 5), np.float32)
  v5 = nn.Dense(3).init(jax.random.key(0), x)
  v7 = nn.Dense(3).init(jax.random.key(0), np.zeros((1, 7), np.float32))
  p = str(tmp_path / 'best.ckpt')
  fileio.save_pytree(p, v7)
  restored = fileio.load_pytree(p)
  assert fileio.tree_shape_mismatch(v7, restored) == []
  assert fileio.tree_shape_mismatch(v5, restored) == [
      'params/kernel: shape (5, 3) expected, got (7, 3)']


def test_write_jsonl_replaces_atomically(tmp_path):
  p = str(tmp_path / 'm.jsonl')
  _write(p, RECORDS)
  fileio.write_jsonl(p, RECORDS[:2])
  assert fileio.read_jsonl(p) == RECORDS[:2]
  assert [f for f in os.listdir(tmp_path)] == ['m.jsonl']  # no temp left
  with pytest.raises(ValueError, match='mapping'):
    fileio.write_jsonl(p, [RECORDS[0], 'oops'])
  assert fileio.read_jsonl(p) == RECORDS[:2]  # a bad record writes nothing
