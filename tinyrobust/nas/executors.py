"""Where trials run: sequential, a local process pool, or Ray, one interface.

    executor = make_executor('ray', num_workers=4)
    for job, outcome in executor.run(evaluate_fn, jobs):   # completion order
      ...
    executor.close()

A *job* is `{'trial': int, 'params': dict}`. `evaluate_fn(params, trial)`
returns an outcome dict (`status`, `terms`, `metrics`, `timings`; see
`search.py`). `run_job` wraps it: it times the call and turns any
`Exception` (a TFLite export error, a NaN loss) into a `'failed'` outcome
holding the error text and its `failure_kind` (`failures.py`: the candidate
or the environment), so one bad candidate never stops the search; a worker
process that dies under a job (process pool, Ray) is an environmental
failure of that job.
`KeyboardInterrupt`/`SystemExit` are not caught: a killed search stops, and
the journal's pending suggestions are re-submitted on restart.

* `SequentialExecutor`: in-process, in order (the default; deterministic).
* `ProcessExecutor`: `concurrent.futures.ProcessPoolExecutor` with the
  'spawn' start method (JAX is not fork-safe); `evaluate_fn` must pickle
  (a module-level function or an instance such as `CandidateEvaluator`).
* `RayExecutor`: `ray.remote` tasks (`pip install ray`); connects to
  `address` or starts a local Ray with `num_workers` CPUs. `evaluate_fn` is
  shipped with cloudpickle.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import time
import traceback
from typing import Any, Callable, Iterator, Sequence

from tinyrobust import registry
from tinyrobust.nas import failures


EvaluateFn = Callable[[dict[str, Any], int], dict[str, Any]]


def run_job(evaluate_fn: EvaluateFn, job: dict[str, Any]) -> dict[str, Any]:
  """Runs one job; returns its outcome with `timings.total_s` filled."""
  t0 = time.perf_counter()
  try:
    out = dict(evaluate_fn(dict(job['params']), int(job['trial'])))
    out.setdefault('status', 'ok')
    out.setdefault('error', None)
  except Exception as err:  # pylint: disable=broad-except
    out = {'status': 'failed', 'terms': None, 'metrics': {},
           'error': f'{type(err).__name__}: {err}',
           'failure_kind': failures.failure_kind(err),
           'traceback': traceback.format_exc(limit=8)}
  timings = dict(out.get('timings') or {})
  timings['total_s'] = time.perf_counter() - t0
  out['timings'] = timings
  return out


class SequentialExecutor:
  """Runs jobs one after another in this process."""

  kind = 'sequential'

  def run(self, evaluate_fn: EvaluateFn, jobs: Sequence[dict[str, Any]]
          ) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for job in jobs:
      yield job, run_job(evaluate_fn, job)

  def close(self) -> None:
    """Nothing to release: jobs ran in this process."""


class ProcessExecutor:
  """A local pool of `num_workers` spawned processes."""

  kind = 'process'

  def __init__(self, num_workers: int = 2):
    if int(num_workers) < 1:
      raise ValueError(f'num_workers must be >= 1, got {num_workers}.')
    self.num_workers = int(num_workers)
    self._pool = None

  def run(self, evaluate_fn, jobs):
    if self._pool is None:
      self._pool = concurrent.futures.ProcessPoolExecutor(
          self.num_workers, mp_context=multiprocessing.get_context('spawn'))
    futures = {self._pool.submit(run_job, evaluate_fn, job): job
               for job in jobs}
    broken = False
    for fut in concurrent.futures.as_completed(futures):
      try:
        out = fut.result()
      except concurrent.futures.BrokenExecutor as err:  # BrokenProcessPool
        out, broken = failures.killed_worker_outcome(err), True
      yield futures[fut], out
    if broken:  # a killed worker breaks the pool: the next batch gets a new one
      self.close()

  def close(self) -> None:
    if self._pool is not None:
      self._pool.shutdown(wait=True, cancel_futures=True)
      self._pool = None


class RayExecutor:
  """Ray tasks, one per job (`ray.init(address)` or a local Ray)."""

  kind = 'ray'

  def __init__(self, num_workers: int = 1, address: str | None = None,
               cpus_per_trial: float = 1.0):
    try:
      import ray  # pylint: disable=g-import-not-at-top
    except ImportError as err:
      raise ValueError("executor='ray' needs the optional dependency ray "
                       '(pip install ray).') from err
    if int(num_workers) < 1 or not cpus_per_trial > 0:
      raise ValueError(f'num_workers must be >= 1 and cpus_per_trial > 0, '
                       f'got {num_workers} and {cpus_per_trial}.')
    self._ray = ray
    self._started = False
    if not ray.is_initialized():
      if address:
        ray.init(address=address)
      else:
        ray.init(num_cpus=int(num_workers), include_dashboard=False,
                 log_to_driver=False)
      self._started = True
    self._remote = ray.remote(num_cpus=cpus_per_trial)(run_job)

  def run(self, evaluate_fn, jobs):
    ray = self._ray
    fn_ref = ray.put(evaluate_fn)
    refs = {self._remote.remote(fn_ref, job): job for job in jobs}
    waiting = list(refs)
    while waiting:
      done, waiting = ray.wait(waiting, num_returns=1)
      try:
        out = ray.get(done[0])
      except Exception as err:  # pylint: disable=broad-except
        # run_job catches the job's own errors: this is a dead worker/node.
        out = failures.killed_worker_outcome(err)
      yield refs[done[0]], out

  def close(self) -> None:
    if self._started:
      self._ray.shutdown()
      self._started = False


def make_executor(kind: str = 'sequential', *, num_workers: int = 1,
                  address: str | None = None, cpus_per_trial: float = 1.0):
  """Builds one of `EXECUTORS`."""
  make = EXECUTORS.lookup(kind)
  return make(num_workers=num_workers, address=address,
              cpus_per_trial=cpus_per_trial)


EXECUTORS = registry.Registry('executor')
EXECUTORS.register('sequential', obj=lambda **_: SequentialExecutor())
EXECUTORS.register('process', obj=lambda num_workers, **_: ProcessExecutor(
    num_workers))
EXECUTORS.register('ray', obj=lambda num_workers, address, cpus_per_trial:
                   RayExecutor(num_workers, address, cpus_per_trial))
