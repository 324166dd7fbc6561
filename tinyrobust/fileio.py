"""Workdir I/O: atomic checkpoints, JSON / JSONL / CSV writers, config files.

Every loader names the file it could not read and says what to do
(`CorruptFileError`, a `ValueError`). JSONL journals (`metrics.jsonl`,
`trials.jsonl`) are append-only: `append_jsonl` writes one whole line with a
single write, then flushes and fsyncs it, so a kill leaves at most a torn
*last* line. `read_jsonl(path, repair=True)` (or `repair_jsonl`) moves such a
torn tail aside to `<path>.torn` with a warning and truncates the journal to
its last whole line; a bad line anywhere before the last one is damage, not a
kill, and raises `CorruptFileError` naming the file and line.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
import zipfile
from typing import Any, Iterable, Mapping

from absl import logging
import flax.serialization
import numpy as np

TORN_SUFFIX = '.torn'

CHECKPOINT_HINT = (
    'Delete it to restart the run from scratch, or, if it is latest.ckpt, copy '
    'best.ckpt over it to resume from the best epoch.')
JSON_HINT = ('Restore it from a backup or the command that wrote it, or delete '
             'it (a workdir without a checkpoint then starts over).')
JOURNAL_HINT = ('Fix or delete that line (the records after it are kept), or '
                'delete the file to start the journal over.')
DATA_HINT = 'Delete it and re-download (or re-create) it.'


class CorruptFileError(ValueError):
  """A file that exists but cannot be parsed; names the file and the fix.

  Attributes:
    path: the file.
    line: 1-based line number of the bad record, or None.
  """

  def __init__(self, message: str, path: str, line: int | None = None):
    super().__init__(message)
    self.path = path
    self.line = line


def _corrupt(path: str, what: str, err: BaseException | str, hint: str,
             line: int | None = None) -> CorruptFileError:
  reason = err if isinstance(err, str) else f'{type(err).__name__}: {err}'
  where = f'{path!r}' + (f', line {line}' if line is not None else '')
  return CorruptFileError(f'Cannot read {what} {where} ({reason}). {hint}',
                          path, line)


def _atomic_write(path: str, data: bytes) -> None:
  """Writes via a temp file + rename so a kill never leaves a torn file."""
  d = os.path.dirname(os.path.abspath(path))
  os.makedirs(d, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=d, prefix='.tmp-')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def check_writable_dir(path: str, *, create: bool = False) -> str:
  """Checks early that `path` is (or can become) a writable folder.

  Args:
    path: a workdir.
    create: create it (with parents) when missing.

  Returns:
    The absolute path.

  Raises:
    ValueError: `path` (or a parent) is a regular file, or the folder (or
      its nearest existing parent, when missing) is not writable.
  """
  if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
    raise ValueError(f'workdir must be a non-empty path, got {path!r}.')
  path = os.path.abspath(os.fspath(path))
  probe = path
  while not os.path.exists(probe):
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    which = 'is' if probe == path else f'is inside {probe!r}, which is'
    raise ValueError(f'workdir {path!r} {which} a regular file, not a folder; '
                     'pass a folder path (it is created when missing).')
  if probe != path and not create:
    if not os.access(probe, os.W_OK | os.X_OK):
      raise ValueError(f'workdir {path!r} cannot be created: its parent '
                       f'{probe!r} is not writable.')
    return path
  try:
    os.makedirs(path, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path, prefix='.write-check-')
    os.close(fd)
    os.remove(tmp)
  except OSError as err:
    raise ValueError(f'workdir {path!r} is not writable ({err.strerror}); '
                     'pass a folder you can write to, or copy the run '
                     'there.') from err
  return path


def save_pytree(path: str, tree: Any) -> None:
  """Serialises a pytree of arrays/scalars with flax msgpack, atomically."""
  _atomic_write(path, flax.serialization.msgpack_serialize(
      flax.serialization.to_state_dict(tree)))


def load_pytree(path: str, target: Any | None = None, *,
                check_shapes: bool = False, hint: str = CHECKPOINT_HINT
                ) -> Any:
  """Reads a pytree written by `save_pytree` (into `target`'s structure).

  Args:
    path: the checkpoint file.
    target: optional pytree whose structure the state is restored into.
    check_shapes: with a `target`, also require every array to have the
      target's shape (`tree_shape_mismatch`).
    hint: what the error message tells the user to do.

  Raises:
    FileNotFoundError: no such file.
    CorruptFileError: truncated or not a msgpack checkpoint, or (with a
      target) a different tree structure / shapes; names the file.
  """
  with open(path, 'rb') as f:
    data = f.read()
  try:
    state = flax.serialization.msgpack_restore(data)
  except Exception as err:  # msgpack raises ValueError/ExtraData/...
    raise _corrupt(path, 'checkpoint', err, 'The file is truncated or not a '
                   'checkpoint. ' + hint) from err
  if not isinstance(state, dict):
    raise _corrupt(path, 'checkpoint', f'holds a {type(state).__name__}, not '
                   'a tree of arrays', hint)
  if target is None:
    return state
  if check_shapes:
    bad = tree_shape_mismatch(target, state)
    if bad:
      raise _corrupt(path, 'checkpoint', 'it does not match the expected '
                     f'tree: {"; ".join(bad[:8])}' +
                     (f' (+{len(bad) - 8} more)' if len(bad) > 8 else ''),
                     'Was it written by another model or config? ' + hint)
  try:
    return flax.serialization.from_state_dict(target, state)
  except (ValueError, KeyError, TypeError) as err:
    raise _corrupt(path, 'checkpoint', err, 'Its tree does not match the '
                   'expected structure (another model or config?). ' + hint
                   ) from err


def _flat_shapes(tree: Any) -> dict[str, Any]:
  """'a/b/c' -> shape of every leaf ('{}' marks an empty subtree)."""
  out: dict[str, Any] = {}

  def walk(prefix: str, node: Any) -> None:
    if isinstance(node, Mapping):
      if not node:
        out[prefix or '/'] = '{}'
      for k, v in node.items():
        walk(f'{prefix}/{k}' if prefix else str(k), v)
    else:
      out[prefix or '/'] = tuple(np.shape(node))

  walk('', flax.serialization.to_state_dict(tree))
  return out


def tree_shape_mismatch(expected: Any, got: Any) -> list[str]:
  """Where two pytrees differ in structure or leaf shapes.

  Both are compared as flax state dicts (dataclasses, FrozenDicts, lists and
  tuples are accepted), so a restored checkpoint can be checked against a
  freshly initialised model.

  Args:
    expected: the reference tree (e.g. the model's `init` variables).
    got: the tree to check (e.g. a restored checkpoint).

  Returns:
    One line per differing path, e.g. `'params/Dense_0/kernel: shape (8, 4)
    expected, got (6, 4)'`, `'params/Dense_1: missing'`, `'params/extra:
    unexpected'`; empty when they match.
  """
  a, b = _flat_shapes(expected), _flat_shapes(got)
  out = []
  for k in sorted(set(a) | set(b)):
    if k not in b:
      out.append(f'{k}: missing')
    elif k not in a:
      out.append(f'{k}: unexpected')
    elif a[k] != b[k]:
      out.append(f'{k}: shape {a[k]} expected, got {b[k]}')
  return out


def to_jsonable(obj: Any) -> Any:
  """Converts NumPy/JAX scalars and arrays (recursively) to JSON types."""
  if isinstance(obj, Mapping):
    return {str(k): to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_jsonable(v) for v in obj]
  if isinstance(obj, (np.generic,)):
    return obj.item()
  if hasattr(obj, 'tolist') and hasattr(obj, 'shape'):
    return np.asarray(obj).tolist()
  if isinstance(obj, float) and not np.isfinite(obj):
    return str(obj)
  return obj


def write_json(path: str, obj: Any) -> None:
  _atomic_write(path, (json.dumps(to_jsonable(obj), indent=2, sort_keys=True)
                       + '\n').encode())


def read_json(path: str, *, hint: str = JSON_HINT) -> Any:
  """Reads a JSON file; a damaged one raises `CorruptFileError` naming it."""
  with open(path, 'rb') as f:
    data = f.read()
  try:
    return json.loads(data.decode('utf-8'))
  except UnicodeDecodeError as err:
    raise _corrupt(path, 'JSON file', err, hint) from err
  except json.JSONDecodeError as err:
    raise _corrupt(path, 'JSON file', f'not valid JSON: {err.msg} (column '
                   f'{err.colno})', hint, line=err.lineno) from err


def load_npz(path: str, *, hint: str = DATA_HINT) -> dict[str, np.ndarray]:
  """Reads every array of an `.npz` file; a damaged one names the file."""
  try:
    with np.load(path, allow_pickle=False) as d:
      return {k: d[k] for k in d.files}
  except FileNotFoundError:
    raise
  except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError,
          AttributeError) as err:
    raise _corrupt(path, 'data file', err, hint) from err


# ---------------------------------------------------------------- JSONL ----


def _encode_line(record: Mapping[str, Any]) -> bytes:
  if not isinstance(record, Mapping):
    raise ValueError(f'A journal record must be a mapping, got '
                     f'{type(record).__name__}: {record!r}.')
  return (json.dumps(to_jsonable(record), sort_keys=True) + '\n').encode()


def _ends_with_newline(path: str) -> bool:
  """True for a missing/empty file or one whose last byte is a newline."""
  try:
    with open(path, 'rb') as f:
      f.seek(0, os.SEEK_END)
      if f.tell() == 0:
        return True
      f.seek(-1, os.SEEK_END)
      return f.read(1) == b'\n'
  except FileNotFoundError:
    return True


def append_jsonl(path: str, record: Mapping[str, Any]) -> None:
  """Appends one record as a whole line: one write, flush, fsync.

  The line is encoded before the file is touched, so a record that cannot
  be serialised writes nothing. When the file ends in a torn line (a kill
  during an earlier append), the fragment is first moved aside
  (`repair_jsonl`) so the new record never glues onto it.
  """
  data = _encode_line(record)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if not _ends_with_newline(path):
    repair_jsonl(path)
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    view = memoryview(data)
    while view:
      n = os.write(fd, view)
      view = view[n:]
    os.fsync(fd)
  finally:
    os.close(fd)


def _parse_line(raw: bytes) -> dict[str, Any]:
  """One JSONL record; raises ValueError (with the reason) otherwise."""
  try:
    text = raw.decode('utf-8')
  except UnicodeDecodeError as err:
    raise ValueError(f'not UTF-8 text: {err.reason} at byte {err.start}'
                     ) from err
  try:
    rec = json.loads(text)
  except json.JSONDecodeError as err:
    raise ValueError(f'not valid JSON: {err.msg} (column {err.colno})'
                     ) from err
  if not isinstance(rec, dict):
    raise ValueError(f'a JSON {type(rec).__name__}, not an object')
  return rec


def _scan(path: str, data: bytes):
  """Parses whole lines; returns (records, tail_start, tail_line, reason).

  `tail_start` is the byte offset of a bad (torn) last line, or None when
  the file ends cleanly. A bad line before the last one raises.
  """
  lines = data.split(b'\n')
  offsets, pos = [], 0
  for raw in lines:
    offsets.append(pos)
    pos += len(raw) + 1
  last = max((i for i, raw in enumerate(lines) if raw.strip()), default=-1)
  records = []
  for i, raw in enumerate(lines):
    if not raw.strip():
      continue
    try:
      records.append(_parse_line(raw))
    except ValueError as err:
      if i != last:
        snippet = raw[:80].decode('utf-8', 'replace')
        raise _corrupt(path, 'journal', f'{err}: {snippet!r}; only the last '
                       'line can be torn by a kill, so the file was damaged '
                       'or edited', JOURNAL_HINT, line=i + 1) from err
      return records, offsets[i], i + 1, str(err)
  return records, None, None, None


def read_jsonl(path: str, *, repair: bool = False) -> list[dict[str, Any]]:
  """Reads a JSONL journal (records in file order).

  Args:
    path: the journal; a missing file reads as empty.
    repair: move a torn last line aside to `<path>.torn` (appended, so
      every fragment is kept) and truncate the file to its last whole line,
      so later appends continue cleanly. False leaves the file untouched
      and skips the torn line.

  Returns:
    The whole records. A complete last record without its newline counts
    (with `repair`, the newline is added).

  Raises:
    CorruptFileError: a line before the last one is not a JSON object
      (names the file and line).
  """
  if not os.path.exists(path):
    return []
  with open(path, 'rb') as f:
    data = f.read()
  records, tail, line, reason = _scan(path, data)
  if tail is None:
    if repair and data and not data.endswith(b'\n'):
      with open(path, 'ab') as f:  # whole record, only the newline missing
        f.write(b'\n')
        f.flush()
        os.fsync(f.fileno())
    return records
  if not repair:
    logging.warning('Ignoring torn last line %d of %s (%s); it is moved to '
                    '%s%s when the journal is next appended to.', line, path,
                    reason, path, TORN_SUFFIX)
    return records
  _move_tail(path, data[tail:], tail, line, reason)
  return records


def _move_tail(path: str, fragment: bytes, keep: int, line: int,
               reason: str) -> None:
  """Appends `fragment` to `<path>.torn`, then truncates `path` to `keep`."""
  torn = path + TORN_SUFFIX
  with open(torn, 'ab') as f:
    f.write(fragment.rstrip(b'\n') + b'\n')
    f.flush()
    os.fsync(f.fileno())
  with open(path, 'r+b') as f:
    f.truncate(keep)
    f.flush()
    os.fsync(f.fileno())
  logging.warning('Torn last line %d of %s (%s; %d bytes, probably a write '
                  'cut short by a kill) was moved to %s; the journal '
                  'continues after line %d.', line, path, reason,
                  len(fragment), torn, line - 1)


def repair_jsonl(path: str) -> int:
  """Moves a torn last line of a JSONL journal aside (see `read_jsonl`).

  Returns:
    Bytes moved to `<path>.torn` (0 when the file was whole or missing).

  Raises:
    CorruptFileError: a bad line before the last one.
  """
  if not os.path.exists(path):
    return 0
  before = os.path.getsize(path)
  read_jsonl(path, repair=True)
  return max(0, before - os.path.getsize(path))


def write_jsonl(path: str, records: Iterable[Mapping[str, Any]]) -> None:
  """Replaces a JSONL file atomically (temp file + rename) with `records`."""
  _atomic_write(path, b''.join(_encode_line(r) for r in records))


def write_csv(path: str, rows: Iterable[Mapping[str, Any]]) -> None:
  rows = [to_jsonable(r) for r in rows]
  fields: list[str] = []
  for r in rows:
    fields.extend(k for k in r if k not in fields)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
