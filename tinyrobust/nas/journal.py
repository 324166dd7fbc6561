"""Append-only trial journal (`trials.jsonl`) and its replay.

Two kinds of lines, both keyed by an integer `trial` id:

* `{"event": "suggest", "trial", "params", "weights", "batch", "time"}`,
  written when a candidate is handed to an executor;
* `{"event": "result", "trial", "status", "params", "weights", "terms",
  "metrics", "timings", "seed", "versions", "error", "time"}`, written when
  it finishes. `status` is one of `STATUSES`:
  'ok' (trained and evaluated), 'infeasible' (over the board's flash or SRAM
  budget, never trained) or 'failed' (an exception, e.g. a TFLite export
  error or a NaN loss; `error` holds its text and `failure_kind` says
  whether it is about the candidate or the environment, `failures.py`).

Lines are written whole, flushed and fsynced one at a time
(`fileio.append_jsonl`), so a kill loses at most the trial in flight. `replay`
(the resume path) moves a torn last line aside to `trials.jsonl.torn` with a
warning and truncates the journal to its last whole line, so the resumed
search appends to a clean file (`fileio.read_jsonl(repair=True)`); a damaged line
before the last one raises `fileio.CorruptFileError` naming the line. `read`
only reads (it skips a torn tail without touching the file).
Non-finite floats are written as the strings 'inf' / 'nan' and read back as
floats. `replay` returns the finished results in trial order and the
suggested-but-unfinished candidates, which a resumed search re-submits
instead of asking for new ones; a trial that failed for an environmental
reason (missing data, out of memory, a killed worker) counts as unfinished,
so it runs again.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Any, Mapping

from tinyrobust import fileio
from tinyrobust import results
from tinyrobust.nas import failures

FILENAME = 'trials.jsonl'
STATUSES = ('ok', 'infeasible', 'failed')
package_versions = results.package_versions  # the one version stamp


def now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec='seconds')


def _floats(obj: Any) -> Any:
  """Turns 'inf'/'-inf'/'nan' strings written by `fileio.to_jsonable` back."""
  if isinstance(obj, dict):
    return {k: _floats(v) for k, v in obj.items()}
  if isinstance(obj, list):
    return [_floats(v) for v in obj]
  if obj in ('inf', '-inf', 'nan'):
    return float(obj)
  return obj


def _restore_numbers(record: dict[str, Any]) -> dict[str, Any]:
  out = dict(record)
  for key in ('terms', 'metrics', 'timings', 'weights'):
    if key in out and out[key] is not None:
      out[key] = _floats(out[key])
  return out


def _check_trial(path: str, n: int, record: Mapping[str, Any]) -> None:
  trial = record.get('trial')
  if isinstance(trial, bool) or not isinstance(trial, int) or trial < 0:
    raise fileio.CorruptFileError(
        f'Record {n + 1} of {path!r} has trial={trial!r}; every line needs '
        f'an integer trial id >= 0. {fileio.JOURNAL_HINT}', path)


@dataclasses.dataclass
class Replay:
  """What a journal holds: finished results and pending suggestions."""
  results: list[dict[str, Any]]
  pending: list[dict[str, Any]]
  # Environmental failures (`failures.is_retried`), also in `pending`.
  retried: list[dict[str, Any]] = dataclasses.field(default_factory=list)

  @property
  def next_trial(self) -> int:
    ids = [r['trial'] for r in self.results + self.pending]
    return max(ids) + 1 if ids else 0


class Journal:
  """The `trials.jsonl` of one search workdir."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, FILENAME)

  def suggest(self, trial: int, params: Mapping[str, Any],
              weights: Mapping[str, float] | None, batch: int) -> None:
    fileio.append_jsonl(self.path, {
        'event': 'suggest', 'trial': int(trial), 'params': dict(params),
        'weights': dict(weights) if weights else None, 'batch': int(batch),
        'time': now()})

  def result(self, record: Mapping[str, Any]) -> dict[str, Any]:
    """Appends a finished trial; fills `event`, `time` and `versions`."""
    rec = dict(record)
    if rec.get('status') not in STATUSES:
      raise ValueError(f'Trial status must be one of {STATUSES}, got '
                       f'{rec.get("status")!r}.')
    if 'trial' not in rec or 'params' not in rec:
      raise ValueError(f'A trial result needs "trial" and "params", got keys '
                       f'{sorted(rec)}.')
    rec['event'] = 'result'
    rec.setdefault('time', now())
    rec.setdefault('versions', package_versions())
    fileio.append_jsonl(self.path, rec)
    return rec

  def read(self, *, repair: bool = False) -> list[dict[str, Any]]:
    """All records; `repair` moves a torn last line aside first."""
    return [_restore_numbers(r)
            for r in fileio.read_jsonl(self.path, repair=repair)]

  def replay(self) -> Replay:
    """Finished results (trial order) and unfinished suggestions.

    Repairs a torn last line first (see the module docstring).

    Raises:
      io.CorruptFileError: a damaged record before the last line, or a
        record without an integer `trial`.
    """
    results: dict[int, dict[str, Any]] = {}
    suggested: dict[int, dict[str, Any]] = {}
    for n, r in enumerate(self.read(repair=True)):
      _check_trial(self.path, n, r)
      if r.get('event') == 'result':
        results[int(r['trial'])] = r  # a re-run's later line wins
      elif r.get('event') == 'suggest':
        suggested[int(r['trial'])] = r
    retried = [results.pop(t) for t in sorted(results)
               if failures.is_retried(results[t])]
    for r in retried:  # environmental failures run again, same parameters
      suggested.setdefault(int(r['trial']), {
          'event': 'suggest', 'trial': int(r['trial']), 'params': r['params'],
          'weights': r.get('weights'), 'batch': r.get('batch', 0)})
    pending = [suggested[t] for t in sorted(suggested) if t not in results]
    return Replay([results[t] for t in sorted(results)], pending, retried)

