"""Workdir I/O: atomic checkpoints, JSON / JSONL / CSV writers, config files."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from typing import Any, Iterable, Mapping

import flax.serialization
import numpy as np


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


def save_pytree(path: str, tree: Any) -> None:
  """Serialises a pytree of arrays/scalars with flax msgpack, atomically."""
  _atomic_write(path, flax.serialization.msgpack_serialize(
      flax.serialization.to_state_dict(tree)))


def load_pytree(path: str, target: Any | None = None) -> Any:
  """Reads a pytree written by `save_pytree` (into `target`'s structure)."""
  with open(path, 'rb') as f:
    state = flax.serialization.msgpack_restore(f.read())
  if target is None:
    return state
  return flax.serialization.from_state_dict(target, state)


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


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def append_jsonl(path: str, record: Mapping[str, Any]) -> None:
  """Appends one JSON line and flushes it to disk (journal semantics)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'a') as f:
    f.write(json.dumps(to_jsonable(record), sort_keys=True) + '\n')
    f.flush()
    os.fsync(f.fileno())


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """Reads a JSONL file, ignoring a torn last line left by a kill."""
  if not os.path.exists(path):
    return []
  out = []
  with open(path) as f:
    lines = f.read().split('\n')
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError:
      if i < len(lines) - 2:  # only the final line may be torn
        raise
  return out


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
