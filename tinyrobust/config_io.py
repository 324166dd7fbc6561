"""Config plumbing shared by every run mode: plain dicts, diffs, workdir pins.

A workdir pins the config it was started with (`config.json` for a training
run, `search_config.json` for a search). `pin_config` writes it on the first
start and, on a restart, refuses a config that differs in a field that
matters, naming the fields; fields listed as mutable (progress bars, eval
batch sizes, a search's trial budget) may change between restarts.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Iterator

import ml_collections

from tinyrobust import fileio


def to_dict(cfg: Any) -> dict[str, Any]:
  """A ConfigDict / Mapping / None as a plain (shallow) dict."""
  if cfg is None:
    return {}
  if hasattr(cfg, 'to_dict'):
    return cfg.to_dict()
  return dict(cfg)


def config_json(config: Any) -> dict[str, Any]:
  """The JSON form of a config, as written to a workdir (sorted, plain)."""
  if isinstance(config, ml_collections.ConfigDict):
    return json.loads(config.to_json_best_effort(sort_keys=True))
  return json.loads(json.dumps(fileio.to_jsonable(config), sort_keys=True))


# Fields added to the base config after workdirs were pinned, with their
# 'off' value: a pinned config without the field equals one where it is off
# (at any depth, e.g. a study's `tasks.<t>.models.<m>.config.train...`), so
# older runs, studies and searches resume.
ADDED_FIELDS = {'train.qat_epochs': 0, 'study.adv_train_qat_epochs': 0,
                'search_study.adv_train_qat_epochs': 0}


def _absent_or_off(path: str, a: dict, b: dict, k: str) -> bool:
  """True when `k` is an `ADDED_FIELDS` field missing on one side and off
  on the other."""
  for field, off in ADDED_FIELDS.items():
    if path == field or path.endswith('.' + field):
      return (k not in a and b.get(k) == off) or (
          k not in b and a.get(k) == off)
  return False


def diff_keys(a: Any, b: Any, prefix: str = '') -> Iterator[str]:
  """Dotted paths where two nested dicts differ (`ADDED_FIELDS` missing on
  one side and off on the other are no difference)."""
  if isinstance(a, dict) and isinstance(b, dict):
    for k in sorted(set(a) | set(b)):
      if not _absent_or_off(f'{prefix}{k}', a, b, k):
        yield from diff_keys(a.get(k), b.get(k), f'{prefix}{k}.')
  elif a != b:
    yield prefix.rstrip('.')


def _drop(d: dict[str, Any], paths: Iterable[str]) -> dict[str, Any]:
  d = json.loads(json.dumps(d))
  for path in paths:
    *parents, leaf = path.split('.')
    node = d
    for p in parents:
      node = node.get(p) if isinstance(node, dict) else None
    if isinstance(node, dict):
      node.pop(leaf, None)
  return d


def pin_config(config: Any, path: str, *, mutable: Iterable[str] = (),
               what: str = 'run', replace_if: bool = False) -> None:
  """Writes `config` to `path`, or checks it against the pinned one.

  Args:
    config: the new config (ConfigDict or dict).
    path: the workdir's pinned config file.
    mutable: dotted fields that may differ between restarts.
    what: 'run' or 'search', for the message.
    replace_if: replace a differing pinned config instead of refusing (the
      caller knows no work was done under the old one yet).

  Raises:
    ValueError: the pinned config differs in a non-mutable field; the message
      names the fields.
  """
  new = config_json(config)
  if os.path.exists(path) and not replace_if:
    old = fileio.read_json(path)
    mutable = tuple(mutable)
    diff = list(diff_keys(_drop(old, mutable), _drop(new, mutable)))
    if diff:
      raise ValueError(
          f'Workdir {os.path.dirname(path)!r} holds a {what} with a different '
          f'config (differs at: {", ".join(diff)}). Use a new --workdir, or '
          'restore the original settings to resume'
          + (f' (only {", ".join(mutable)} may change).' if mutable else '.'))
  fileio.write_json(path, new)
