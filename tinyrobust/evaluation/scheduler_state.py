"""The scheduler's per-example state, its state file and its compile clock.

`AttackState` is what a resumable evaluation saves for each attack (numpy
arrays of per-example decisions plus a cursor); `StateFile` writes it
atomically to one `.npz` (arrays plus a JSON `meta` entry holding a
fingerprint of the examples, attacks, eps grid, seed and batch size, so a
state file of another evaluation is refused, never silently reused).
`timed` adds a block's wall and compile seconds (JAX's compile events) to a
stage's totals.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import threading
import time
from typing import Any, Callable, Mapping

import jax
import numpy as np

STATE_VERSION = 1
COMPILE_EVENTS = ('/jax/core/compile/jaxpr_trace_duration',
                  '/jax/core/compile/jaxpr_to_mlir_module_duration',
                  '/jax/core/compile/backend_compile_duration')
NONE = np.iinfo(np.int32).max  # "not decided" in `decided_at`


class _CompileClock:
  """Sums JAX's compile-event durations on this thread (one listener)."""

  _lock = threading.Lock()
  _installed = False
  _local = threading.local()

  @classmethod
  def _listener(cls, name: str, secs: float, **_) -> None:
    if name in COMPILE_EVENTS:
      cls._local.total = getattr(cls._local, 'total', 0.0) + secs

  @classmethod
  def now(cls) -> float:
    with cls._lock:
      if not cls._installed:
        jax.monitoring.register_event_duration_secs_listener(cls._listener)
        cls._installed = True
    return getattr(cls._local, 'total', 0.0)


def credit_compile(secs: float) -> None:
  """Adds `secs` to this thread's compile clock (compiles other threads did
  on its behalf: `workers.Workers.map`)."""
  compile_clock()
  _CompileClock._local.total = getattr(_CompileClock._local, 'total',
                                       0.0) + float(secs)


def compile_clock() -> float:
  """Seconds JAX has spent compiling on this thread so far (from the first
  call of this or `timed`; differences time a block's compiles)."""
  return _CompileClock.now()


@contextlib.contextmanager
def timed(times: dict[str, list[float]], stage: str):
  """Adds (wall, compile, cpu) seconds of the block to `times[stage]`: cpu
  is the process's CPU time (all threads, `time.process_time`), which other
  processes on a shared machine do not inflate as they do the wall time."""
  t0, c0, p0 = time.perf_counter(), _CompileClock.now(), time.process_time()
  yield
  wall, comp = time.perf_counter() - t0, _CompileClock.now() - c0
  cpu = time.process_time() - p0
  acc = times.setdefault(stage, [0.0, 0.0, 0.0])
  if len(acc) < 3:  # a state saved before cpu time was kept
    acc.append(float('nan'))
  acc[0] += wall
  acc[1] += comp
  acc[2] += cpu


@dataclasses.dataclass
class AttackState:
  """One attack's progress, all host numpy (what a state file holds).

  decided_at [N]: eps index (in ascending order) of the first witness, or
    `NONE`. stage_of [N]: index into ('clean', *stages) of the stage that
    found it, -1 if none. nonfinite [N]: the witness had non-finite output.
    inconsistent [N]: the witness changed the prediction (False for a
    cascade's clean misclassification, whose adversarial input is x).
    cursor: (eps index, stage index, next bucket); stage_open [N]: the open
    set when the current stage started (buckets are rebuilt from it).
  """
  decided_at: np.ndarray
  stage_of: np.ndarray
  nonfinite: np.ndarray
  inconsistent: np.ndarray
  stage_open: np.ndarray
  cursor: list[int]
  audit_attacked: np.ndarray
  audit_regressed: np.ndarray
  times: dict[str, list[float]]
  done: bool = False

  @classmethod
  def fresh(cls, n: int, n_eps: int) -> 'AttackState':
    return cls(decided_at=np.full(n, NONE, np.int32),
               stage_of=np.full(n, -1, np.int32),
               nonfinite=np.zeros(n, bool), inconsistent=np.zeros(n, bool),
               stage_open=np.zeros(n, bool), cursor=[0, 0, 0],
               audit_attacked=np.zeros(n_eps, np.int64),
               audit_regressed=np.zeros(n_eps, np.int64), times={})

  ARRAYS = ('decided_at', 'stage_of', 'nonfinite', 'inconsistent',
            'stage_open', 'audit_attacked', 'audit_regressed')


def fingerprint(x, y, attacks, grid, seed, step, audit, min_bucket,
                stages_of: Callable, extra: Mapping | None = None) -> str:
  """sha256 of everything a resumed run must share with the saved one."""
  h = hashlib.sha256()
  h.update(np.ascontiguousarray(x).tobytes())
  h.update(np.ascontiguousarray(y).astype(np.int64).tobytes())
  meta = {'attacks': {n: jsonable(dict(a.config)) for n, a in
                      attacks.items()},
          'stages': {n: [s for s, _ in stages_of(a)] for n, a in
                     attacks.items()},
          'grid': [float(e) for e in grid], 'seed': int(seed),
          'step': int(step), 'audit': int(audit),
          'min_bucket': int(min_bucket), 'version': STATE_VERSION,
          **jsonable(dict(extra or {}))}
  h.update(json.dumps(meta, sort_keys=True, default=str).encode())
  return h.hexdigest()


def jsonable(obj):
  if isinstance(obj, Mapping):
    return {str(k): jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [jsonable(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  if isinstance(obj, (np.floating, np.integer)):
    return obj.item()
  return obj


class StateFile:
  """Atomic save/load of every attack's `AttackState` (one .npz)."""

  def __init__(self, path: str | None, fingerprint: str, names, n: int,
               n_eps: int, save_every: float):
    self.path, self.fingerprint = path, fingerprint
    self.names, self.n, self.n_eps = list(names), n, n_eps
    self.save_every = float(save_every)
    self._last = time.monotonic()

  def load(self) -> dict[str, AttackState]:
    fresh = {m: AttackState.fresh(self.n, self.n_eps) for m in self.names}
    if self.path is None or not os.path.exists(self.path):
      return fresh
    try:
      with np.load(self.path, allow_pickle=False) as z:
        meta = json.loads(str(z['meta']))
        arrays = {k: np.asarray(z[k]) for k in z.files if k != 'meta'}
    except (OSError, ValueError, KeyError) as e:
      raise ValueError(f'Evaluation state {self.path!r} is unreadable ({e}); '
                       'delete it to start the evaluation over.') from e
    if meta.get('fingerprint') != self.fingerprint:
      raise ValueError(
          f'Evaluation state {self.path!r} belongs to another evaluation '
          '(different examples, attacks, eps grid, seed, batch size or '
          'number of CPU devices, $TINYROBUST_CPU_DEVICES); '
          'delete it or pass another state_path.')
    for i, m in enumerate(self.names):
      st = fresh[m]
      for k in AttackState.ARRAYS:
        setattr(st, k, arrays[f'{i}.{k}'])
      st.cursor = list(meta['cursor'][m])
      st.done = bool(meta['done'][m])
      st.times = {k: list(v) for k, v in meta['times'][m].items()}
    return fresh

  def save(self, states: Mapping[str, AttackState], *, force: bool = False
           ) -> None:
    if self.path is None:
      return
    if not force and time.monotonic() - self._last < self.save_every:
      return
    arrays = {f'{i}.{k}': getattr(states[m], k)
              for i, m in enumerate(self.names) for k in AttackState.ARRAYS}
    meta = {'fingerprint': self.fingerprint, 'version': STATE_VERSION,
            'cursor': {m: list(map(int, s.cursor)) for m, s in states.items()},
            'done': {m: bool(s.done) for m, s in states.items()},
            'times': {m: s.times for m, s in states.items()}}
    tmp = f'{self.path}.tmp{os.getpid()}.npz'
    np.savez(tmp, meta=np.asarray(json.dumps(meta)), **arrays)
    os.replace(tmp, self.path)
    self._last = time.monotonic()


def counts(st: AttackState, ok: np.ndarray, clean_fin: np.ndarray,
           eps_grid: np.ndarray, order: np.ndarray, *, cascade: bool
           ) -> dict[str, Any]:
  """Per-eps counts in the grid's own order (`order`: the grid's ascending
  argsort) from one attack's per-point state (`Scheduler.run`'s record)."""
  n_eps = len(eps_grid)
  rank = np.empty(n_eps, np.int64)
  rank[order] = np.arange(n_eps)
  robust, consistent = [], []
  out = {'clean_correct': int(ok.sum()),
         'clean_nonfinite': int((~clean_fin).sum()),
         'robust': np.zeros(n_eps, np.int64),
         'consistent': np.zeros(n_eps, np.int64),
         'adv_nonfinite': np.zeros(n_eps, np.int64),
         'raw_robust': np.zeros(n_eps, np.float64),
         'broken_by': [{} for _ in range(n_eps)], 'audit': []}
  for e in range(n_eps):
    k = rank[e]
    dec = st.decided_at <= k
    r = ok & ~dec
    c = ~(dec & st.inconsistent)
    robust.append(r)
    consistent.append(c)
    out['robust'][e] = r.sum()
    out['consistent'][e] = c.sum()
    out['adv_nonfinite'][e] = int((dec & st.nonfinite & clean_fin).sum())
    att, reg = int(st.audit_attacked[k]), int(st.audit_regressed[k])
    before = int((ok & (st.decided_at < k)).sum())
    out['raw_robust'][e] = r.sum() + (reg / att * before if att else 0.0)
    out['audit'].append({'attacked': att, 'regressed': reg})
    if cascade:
      st_k = st.stage_of[dec & (st.stage_of >= 0)]
      out['broken_by'][e] = {int(i): int(m) for i, m in
                             zip(*np.unique(st_k, return_counts=True))}
  times = st.times
  out['seconds'] = float(sum(v[0] for v in times.values()))
  out['stage_seconds'] = {s: float(v[0] - v[1]) for s, v in times.items()}
  out['compile_seconds'] = {s: float(v[1]) for s, v in times.items()}
  out['cpu_seconds'] = {s: float(v[2]) if len(v) > 2 else float('nan')
                        for s, v in times.items()}
  out['examples'] = {'clean': ok, 'robust': np.stack(robust),
                     'consistent': np.stack(consistent)}
  for key in ('robust', 'consistent', 'adv_nonfinite', 'raw_robust'):
    out[key] = out[key].tolist()
  return out


def scatter(st: AttackState, idx, pred, fin, clean_pred, k, stage_id, *,
            n_audit_from, lo) -> None:
  """Records the new witnesses of one scheduler bucket (rows `idx`, its
  first row at position `lo` of the stage's list); rows from position
  `n_audit_from` on are audit rows, only counted."""
  pos = lo + np.arange(len(idx))
  audit = pos >= n_audit_from
  broken = ~fin | (pred != clean_pred[idx])
  st.audit_attacked[k] += int(audit.sum())
  st.audit_regressed[k] += int((audit & ~broken).sum())
  new = ~audit & broken & (st.decided_at[idx] == NONE)
  hit = idx[new]
  st.decided_at[hit] = k
  st.stage_of[hit] = stage_id
  st.nonfinite[hit] = ~fin[new]
  st.inconsistent[hit] = True


def audit_points(st: AttackState, sorted_eps: np.ndarray, k: int, s: int,
                 rng_key: tuple[int, int], audit: int, *, ok: np.ndarray,
                 first_stage: int) -> np.ndarray:
  """Clean-correct points decided at a smaller eps by the first stage,
  re-attacked at ascending eps index k (stage s) for the raw per-eps
  outcome, not updated; at most `audit`, drawn with `rng_key` = (seed,
  attack index)."""
  if s != 0 or k == 0 or not audit or sorted_eps[k] <= sorted_eps[k - 1]:
    return np.zeros(0, np.int64)
  cand = np.flatnonzero((st.decided_at < k) & ok & ~st.nonfinite & (
      st.stage_of == first_stage) & st.inconsistent)
  if len(cand) > audit:
    rng = np.random.default_rng([int(rng_key[0]), rng_key[1], k])
    cand = np.sort(rng.choice(cand, audit, replace=False))
  return cand
