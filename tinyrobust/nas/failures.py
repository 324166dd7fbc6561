"""Why a search trial failed: the candidate, or the environment it ran in.

A failed trial's record carries `failure_kind`:

* `'candidate'`: about the architecture itself (a NaN loss, a model that
  cannot be built or exported, any error not listed below). A resumed
  search replays it: the designer learns from it and it never runs again.
* `'environment'`: about where it ran (missing data: `DataNotFoundError`
  and every `OSError`; `MemoryError` or an XLA "RESOURCE_EXHAUSTED" out of
  memory; a killed worker process: `BrokenProcessPool`, Ray's
  worker/node/out-of-memory errors). A resumed search runs it again with
  the same parameters, so a search started without its data resumes and
  trains once the data is there.

(Over-budget candidates are not failures: their status is 'infeasible'.)
Journals written before this field existed are classified from their
`error` text (`record_kind`). `check_outcome` ends a search in which no
trial succeeded with `SearchFailedError`, counting the reasons, instead of
a summary with no best trial.
"""

from __future__ import annotations

import collections
from typing import Any, Mapping, Sequence

CANDIDATE, ENVIRONMENT = 'candidate', 'environment'
KINDS = (CANDIDATE, ENVIRONMENT)
# Exception class names (any module) that mean a dead worker or no memory.
_ENV_NAMES = ('MemoryError', 'BrokenProcessPool', 'BrokenExecutor',
              'WorkerCrashedError', 'NodeDiedError', 'OutOfMemoryError',
              'RayActorError', 'LocalRayletDiedError', 'ObjectLostError',
              'DataNotFoundError')
_ENV_TEXT = ('RESOURCE_EXHAUSTED', 'Out of memory', 'out of memory',
             'Cannot allocate memory')
_OS_NAMES = ('OSError', 'FileNotFoundError', 'PermissionError', 'IOError',
             'NotADirectoryError', 'IsADirectoryError', 'TimeoutError',
             'ConnectionError', 'BrokenPipeError', 'InterruptedError')


class SearchFailedError(RuntimeError):
  """No trial of a search succeeded (its reasons are in the message)."""


def failure_kind(err: BaseException) -> str:
  """'environment' or 'candidate' for an exception a trial raised."""
  names = {c.__name__ for c in type(err).__mro__}
  if isinstance(err, (OSError, MemoryError)) or names & set(_ENV_NAMES):
    return ENVIRONMENT
  text = str(err)
  if any(t in text for t in _ENV_TEXT):
    return ENVIRONMENT
  return CANDIDATE


def kind_of_text(error: str | None) -> str:
  """The kind of a journaled `error` text (`'<ExceptionName>: message'`)."""
  error = error or ''
  name = error.split(':', 1)[0].strip().rsplit('.', 1)[-1]
  if name in _ENV_NAMES or name in _OS_NAMES:
    return ENVIRONMENT
  if any(t in error for t in _ENV_TEXT):
    return ENVIRONMENT
  return CANDIDATE


def record_kind(record: Mapping[str, Any]) -> str | None:
  """A result record's failure kind (None unless its status is 'failed')."""
  if record.get('status') != 'failed':
    return None
  kind = record.get('failure_kind')
  return kind if kind in KINDS else kind_of_text(record.get('error'))


def is_retried(record: Mapping[str, Any]) -> bool:
  """True for a failed trial a resumed search runs again."""
  return record_kind(record) == ENVIRONMENT


def killed_worker_outcome(err: BaseException) -> dict[str, Any]:
  """The outcome of a job whose worker process died under it."""
  return {'status': 'failed', 'terms': None, 'metrics': {},
          'error': f'{type(err).__name__}: {err} (the worker process died)',
          'failure_kind': ENVIRONMENT, 'timings': {}}


def reasons(results: Sequence[Mapping[str, Any]]) -> str:
  """`'2 ok, 1 infeasible, 3 failed (environment: DataNotFoundError x3)'`."""
  status = collections.Counter(r.get('status') for r in results)
  parts = [f'{status[s]} {s}' for s in ('ok', 'infeasible') if status[s]]
  failed = [r for r in results if r.get('status') == 'failed']
  if failed:
    by_kind = collections.defaultdict(collections.Counter)
    for r in failed:
      name = (r.get('error') or 'unknown error').split(':', 1)[0]
      by_kind[record_kind(r)][name] += 1
    parts.append(f'{len(failed)} failed (' + '; '.join(
        f'{k}: ' + ', '.join(f'{n} x{c}' for n, c in by_kind[k].items())
        for k in KINDS if k in by_kind) + ')')
  return ', '.join(parts) or 'no trials'


def check_outcome(results: Sequence[Mapping[str, Any]], workdir: str
                  ) -> None:
  """Raises `SearchFailedError` when no trial of `results` succeeded.

  The message counts the statuses and failure reasons, quotes the first
  error and says what a rerun does (environmental failures are retried,
  candidate failures and infeasible candidates are not).
  """
  if any(r.get('status') == 'ok' for r in results):
    return
  failed = [r for r in results if r.get('status') == 'failed']
  env = [r for r in failed if is_retried(r)]
  first = (failed[0].get('error') or '') if failed else ''
  if len(first) > 600:
    first = first[:600] + ' [...; the whole error is in trials.jsonl]'
  msg = (f'No trial of the search in {workdir!r} succeeded: '
         f'{reasons(results)}.')
  if first:
    msg += f' First error: {first}'
  if env:
    msg += (f' The {len(env)} environmental failure(s) are retried when the '
            'same command is run again: fix their cause (data, memory, '
            'workers) first.')
  if len(env) < len(results):
    msg += (' Candidate failures and infeasible candidates are kept: change '
            'the search space, budget or training settings (or use a new '
            'workdir) to search again.')
  raise SearchFailedError(msg + ' No summary.json was written.')
