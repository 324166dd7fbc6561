"""The host-side evaluation scheduler: compacted stages, nested eps, resumable.

The toolkit's own evaluations (the `attack` run mode, the studies, the
search's term, the deployed path) run their attacks through this scheduler;
the attack kernels themselves stay pure, jittable and vmappable for users
who import them. For each attack, in ascending eps, for each of its stages
(an AutoAttack cascade has several, any other attack is one stage):

1. gather the points still open into buckets: full batches of the step size,
   the remainder padded to an allowed size (`bucket_sizes`, growth per stage
   `buckets.stage_growth`), so each stage compiles for a bounded set of shapes;
2. run the stage on each bucket (kernels called eagerly with concrete arrays,
   so on CPU their `loop='auto'` steps are host-driven, or rolled for a
   dispatch-bound model: `loops.auto_for`); inside a bucket, host-driven
   kernels that declare a per-example `done` (APGD's passes) stop stepping
   the points they have broken (`retire=True`, `loops.retire_as`): those
   shrink the batch, the others' trajectories are unchanged;
3. scatter the outcome back: a point whose prediction changed (or whose
   output is not finite) is decided, and that adversarial example is its
   witness.

Nested eps: an adversarial example found at a smaller eps lies in every
larger ball of the same norm, so a decided point is never attacked again at
a larger eps. The numbers reported per eps are therefore the per-example
worst case over the attack's runs at all eps up to that one (a stronger and
monotone number; this is what `robust` / `consistent` hold).

Raw per-eps outcome (for the "robust accuracy rises with eps" flag, which
the worst case hides by construction): at each eps after the first, up to
`audit` points decided at a smaller eps by the first stage are attacked
again by that stage and not updated; `raw` counts how many of them the
attack failed to break again (`regressed`). `raw_robust[k]` estimates the
attack's own (not worst-case) robust count at eps k as the worst-case count
plus the regression rate times the points decided before eps k.

Which points are open. For a cascade (AutoAttack), a point misclassified
on the clean input is done before any attack (stage 0, 'clean', consistent
because its adversarial input is x itself), as in AutoAttack. For a
one-stage attack (FGSM, PGD, ...) misclassified points are attacked too
(`consistency=True`, the default), so that consistency (prediction on x_adv
equals the prediction on x, the study's "adversarial accuracy") is
measured; for them the witness is a change of the (wrong) prediction. With
`consistency=False` a one-stage attack is treated like a cascade: only the
clean-correct points are attacked (what robust accuracy needs, and what
AutoAttack and torchattacks do), and the misclassified ones count as
consistent (x_adv = x), so `consistent` is then not the study's metric.

Keys: bucket `b` of stage `s` at eps index `k` of attack `a` uses
`fold_in(fold_in(fold_in(key(seed), a), k * n_stages + s), b)` (on a CPU
split into devices, device d's share folds in d: `workers`); buckets are
formed from the open points in index order, so results are deterministic
for a seed, batch size and device count, and a resumed run repeats exactly
what an uninterrupted one does.

Resumable: with `state_path`, the per-example decisions, the stage reached,
the bucket reached inside it and the seed are written atomically (at most
every `save_every` seconds, and when an attack ends); a killed run started
again with the same arguments continues from there and returns the same
counts as an uninterrupted one (AutoAttack's `state_path`).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Mapping, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from tinyrobust import sharding
from tinyrobust.attacks import loops
from tinyrobust.attacks import registry as attack_registry
from tinyrobust.evaluation import buckets
from tinyrobust.evaluation import scheduler_state
from tinyrobust.evaluation import workers as workers_lib
from tinyrobust.models import depthwise

_NONE = scheduler_state.NONE
_AttackState = scheduler_state.AttackState
_timed = scheduler_state.timed


bucket_sizes, stage_evals = buckets.bucket_sizes, buckets.stage_evals
stage_growth, _buckets = buckets.stage_growth, buckets.buckets
LONG_STAGE_EVALS, LONG_GROWTH = buckets.LONG_STAGE_EVALS, buckets.LONG_GROWTH
SHORT_GROWTH, FINE_GROWTH = buckets.SHORT_GROWTH, buckets.FINE_GROWTH


def stages_of(attack: attack_registry.Attack
              ) -> tuple[tuple[str, Callable], ...]:
  """(stage name, kernel) pairs: a cascade's `stages`, else the attack."""
  stages = getattr(attack, 'stages', None) or ()
  if stages:
    return tuple((s.name, s) for s in stages)
  return ((attack.name, attack),)


def host_driven(kernel: Callable) -> bool:
  """True when a kernel drives its own steps from the host on this backend
  (`loop='host'`, or `'auto'` on CPU): the scheduler then calls it eagerly,
  since under `jax.jit` it would fall back to a rolled loop. Every other
  kernel is called through one cached `jax.jit` per stage."""
  config = dict(getattr(kernel, 'config', None) or {})
  if 'loop' not in config:  # a plain kernel: no host-driven steps
    return False
  if config.get('steps') == 1 and config.get('restarts', 1) == 1:
    return False  # FGSM: one jitted program beats host-driven pieces
  try:
    return loops.host_mode(config['loop'])
  except ValueError:
    return False


class Scheduler:
  """Counts clean/robust/consistent predictions per attack and eps, attacking
  only the points still open (see the module docstring).

  Attributes:
    attacks: name -> `tinyrobust.attacks.Attack`.
    eps_grid: the radii as given (results keep this order).
    batch_size, mesh: the step size cap and the 1-D device mesh.
    workers: on a CPU split into devices, one per device, each running
      its share of a bucket as its own program (`workers`; then the mesh
      is one device).
    calls: (attack, stage, eps, attacked indices) of each kernel call.
    min_bucket: smallest padded bucket.
    growth: ratio between allowed bucket sizes, a number > 1 (2: at most
      2x padding and `log2(step / min_bucket) + 1` compiled shapes per
      stage; 4: half the shapes, up to 4x padding), 1 (every multiple of
      `min_bucket`), or 'auto' (default): per stage, `stage_growth`
      (`SHORT_GROWTH`, or `LONG_GROWTH` for stages of at least
      `LONG_STAGE_EVALS` model evaluations per point).
    audit: points re-attacked per eps for the raw per-eps outcome.
    consistency: also attack clean-misclassified points with one-stage
      attacks (see the module docstring).
    step_loop: what the kernels' loop='auto' means during a run: 'auto'
      (default) is `loops.auto_for` on one step's forward pass (rolled
      steps for a dispatch-bound model on CPU), or 'host' / 'fori'.
    retire: host-driven kernels stop stepping the points they broke
      (`loops.retire_as(min_bucket)`); False: every attacked point runs
      every step (the witnesses are then the kernels' direct outputs).
  """

  def __init__(self, apply_fn: Callable, attacks: Mapping[str, Callable],
               eps_grid: Sequence[float], *, batch_size: int,
               devices: Sequence[jax.Device] | None = None,
               min_bucket: int = 8, audit: int = 32,
               growth: float | str = 'auto',
               consistency: bool = True, step_loop: str = 'auto',
               retire: bool = True):
    self.apply_fn = apply_fn
    self.attacks = {n: attack_registry.as_attack(n, a)
                    for n, a in attacks.items()}
    self.eps_grid = np.asarray(eps_grid, np.float64)
    if self.eps_grid.ndim != 1 or not self.eps_grid.size or np.any(
        ~np.isfinite(self.eps_grid)) or np.any(self.eps_grid < 0):
      raise ValueError(f'eps_grid must be a non-empty 1-D list of finite '
                       f'numbers >= 0, got {eps_grid!r}.')
    for name, value, lo in (('batch_size', batch_size, 1),
                            ('min_bucket', min_bucket, 1),
                            ('audit', audit, 0)):
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)
                                                   ) or value < lo:
        raise ValueError(f'{name} must be an int >= {lo}, got {value!r}.')
    self.batch_size, self.min_bucket = int(batch_size), int(min_bucket)
    if growth != 'auto' and (isinstance(growth, (bool, str)) or not
                             isinstance(growth, (int, float, np.number))
                             or not (growth == 1 or 1.05 <= growth <= 16)):
      raise ValueError(f"growth must be 'auto', 1 (multiples of min_bucket) "
                       f'or a number in [1.05, 16], got {growth!r}.')
    self.audit = int(audit)
    self.growth = growth if growth == 'auto' else float(growth)
    if not isinstance(consistency, bool):
      raise ValueError(f'consistency must be a bool, got {consistency!r}.')
    self.consistency = consistency
    if not isinstance(retire, bool):
      raise ValueError(f'retire must be a bool, got {retire!r}.')
    self.retire = retire
    if step_loop not in ('auto', 'host', 'fori'):
      raise ValueError(f"step_loop must be 'auto', 'host' or 'fori', got "
                       f'{step_loop!r}.')
    self.step_loop, self.cheap = step_loop, False
    mesh_devices, worker_devices = workers_lib.split_devices(devices)
    self.mesh = sharding.batch_mesh(mesh_devices)
    self.workers = workers_lib.Workers(worker_devices)
    self.num_devices = self.mesh.size * self.workers.size
    self._order = np.argsort(self.eps_grid, kind='stable')
    self._predict = jax.jit(self._predict_fn)
    self._jitted: dict[int, tuple[Callable, Callable]] = {}
    self.calls: list[tuple[str, str, float, np.ndarray]] = []

  def step_size(self, n: int) -> int:
    """The step (full bucket) size for `n` points: a multiple of the
    devices."""
    step = sharding.step_batch_size(self.batch_size, n, self.mesh)
    return -(-step // self.num_devices) * self.num_devices

  def _predict_fn(self, variables, x):
    logits = self.apply_fn(variables, x)
    finite = jnp.all(jnp.isfinite(logits), axis=-1) & jnp.all(
        jnp.isfinite(x.reshape(x.shape[0], -1)), axis=-1)
    return jnp.argmax(logits, -1), finite

  def _callable(self, kernel: Callable) -> Callable:
    """The kernel itself if it is host-driven, else one cached jit of it
    (so a stage compiles once per bucket size)."""
    if host_driven(kernel):
      return kernel
    if id(kernel) not in self._jitted:
      self._jitted[id(kernel)] = (kernel, jax.jit(kernel))
    return self._jitted[id(kernel)][1]

  def warm_sizes(self, n: int, kernel: Callable | None = None) -> list[int]:
    """Bucket sizes a run over `n` points can use for one stage `kernel`
    (None: the smallest growth of any stage): exactly
    `bucket_sizes(n, step)` when one attack pass over every point is all
    there is (one-stage attacks attacking every point, one nonzero eps),
    else every allowed bucket size in [min_bucket, step] and the step."""
    step = self.step_size(n)
    if kernel is not None:
      growth = self._growth(kernel)
    else:
      growth = min(self._growth(k) for a in self.attacks.values()
                   for _, k in stages_of(a))
    sizes = lambda r: bucket_sizes(r, step, min_bucket=self.min_bucket,
                                   multiple=self.num_devices, growth=growth)
    nonzero = np.unique(self.eps_grid[self.eps_grid > 0])
    cascade = any(getattr(a, 'stages', None) for a in self.attacks.values())
    if len(nonzero) <= 1 and not cascade and self.consistency:
      return sorted(set(sizes(n)))
    return sorted({sizes(r)[-1] for r in range(1, step + 1)})

  def precompile(self, variables, x: np.ndarray) -> float:
    """Compiles every stage (and the prediction) for the bucket sizes a run
    over `x` can use, by running them once on zeros; returns the seconds.

    `variables` may be abstract (`jax.eval_shape` of the init, as a search
    passes while the candidate trains): zeros of their shapes stand in.
    """
    start = time.perf_counter()
    zeros = lambda a: jnp.zeros(a.shape, a.dtype)
    variables = jax.device_put(jax.tree.map(zeros, variables),
                               sharding.replicated(self.mesh))
    eps = jnp.asarray(float(self.eps_grid.max()), x.dtype)
    step = self.step_size(len(x))
    zero_x = lambda size: np.zeros((size,) + x.shape[1:], x.dtype)
    step_loop = self._step_loop(variables, x)
    for size in sorted(set(self.warm_sizes(len(x))) | {step}):
      jax.block_until_ready(self._predict(variables, self._put(zero_x(size))))
    with self._context(step_loop):
      for attack in self.attacks.values():
        for _, kernel in stages_of(attack):
          for size in sorted(set(self.warm_sizes(len(x), kernel)) | {step}):
            self._attack_bucket(self._callable(kernel), variables,
                                zero_x(size), np.zeros(size, np.int32),
                                np.arange(size), jax.random.key(0), eps,
                                self._shares(kernel))
    return time.perf_counter() - start

  def _step_loop(self, variables, x: np.ndarray) -> str:
    """'auto' for this run; `cheap`: rolled by `auto_for` (stage_growth)."""
    self.cheap = False
    if self.step_loop != 'auto':
      return self.step_loop
    step = self.step_size(len(x))
    mode = loops.auto_for(self._predict_fn, variables, jax.ShapeDtypeStruct(
        (step // self.workers.size,) + x.shape[1:], x.dtype))
    self.cheap = mode != loops.default_loop()
    return mode

  @contextlib.contextmanager
  def _context(self, step_loop: str):
    """How kernels run during `run` (and `precompile`, so the compiled
    programs are the ones `run` uses): 'auto' steps as `step_loop`, broken
    points retired, depthwise convolutions as shifted multiply-adds."""
    with loops.auto_as(step_loop), depthwise.shifted_forward(), \
        loops.retire_as(self.min_bucket if self.retire else None):
      yield

  def _growth(self, kernel: Callable) -> float:
    return stage_growth(self.growth, kernel, self.cheap)

  def _put(self, a: np.ndarray) -> jax.Array:
    return jax.device_put(a, sharding.batch_sharding(self.mesh))

  def _clean(self, variables, x, y):
    preds, fins = [], []
    for _, (xb,), n_valid in sharding.padded_batches(
        (x,), self.batch_size, self.mesh):
      p, f = self._predict(variables, xb)
      preds.append(np.asarray(p)[:n_valid])
      fins.append(np.asarray(f)[:n_valid])
    return np.concatenate(preds), np.concatenate(fins)

  def run(self, variables, x: np.ndarray, y: np.ndarray, *, seed: int,
          state_path: str | None = None, save_every: float = 30.0
          ) -> dict[str, dict[str, Any]]:
    """Counts per attack over all of `(x [N, ...], y [N])`.

    Args:
      variables: the model variables (replicated over the mesh).
      x, y: host arrays, already validated (`evaluation.inputs`).
      seed: the root of every key (see the module docstring).
      state_path: a `.npz` file to resume from and save to (None: no state).
      save_every: seconds between state saves (an attack's end always saves).

    Returns:
      name -> {'clean_correct', 'clean_nonfinite', 'robust' [E],
      'consistent' [E], 'adv_nonfinite' [E], 'broken_by' (per eps, stage
      index -> examples it broke first; cascades), 'raw_robust' [E]
      (estimated raw per-eps count, see the module docstring), 'audit'
      (per eps attacked/regressed), 'seconds', 'stage_seconds' and
      'compile_seconds', 'cpu_seconds' (stage -> seconds; cpu: the
      process's CPU time, compile included), 'step_loop' (what loop='auto'
      meant), 'examples': per-example booleans {'clean' [N], 'robust'
      [E, N], 'consistent' [E, N]}}, with E in the order of `eps_grid`.
    """
    y = np.asarray(y, np.int32)
    n = len(x)
    variables = jax.device_put(variables, sharding.replicated(self.mesh))
    clean_pred, clean_fin = self._clean(variables, x, y)
    ok = (clean_pred == y) & clean_fin
    step = self.step_size(n)
    step_loop = self._step_loop(variables, x)
    fingerprint = scheduler_state.fingerprint(
        x, y, self.attacks, self.eps_grid, seed, step, self.audit,
        self.min_bucket, stages_of,
        extra={'growth': self.growth, 'consistency': self.consistency,
               'long_stages': [LONG_STAGE_EVALS, LONG_GROWTH, FINE_GROWTH],
               'short_growth': buckets.SHORT_GROWTH, 'cheap': self.cheap,
               **({'devices': self.workers.size} if any(  # split stages
                   self._shares(k) > 1 for a in self.attacks.values()
                   for _, k in stages_of(a)) else {})})
    store = scheduler_state.StateFile(state_path, fingerprint, self.attacks,
                                      n, len(self.eps_grid), save_every)
    states, out = store.load(), {}
    for a_idx, (name, attack) in enumerate(self.attacks.items()):
      st = states[name]
      if not st.done:
        with self._context(step_loop):
          self._run_attack(a_idx, attack, st, variables, x, y, clean_pred,
                           clean_fin, step, seed, lambda: store.save(states))
        st.done = True
        store.save(states, force=True)
      out[name] = scheduler_state.counts(
          st, ok, clean_fin, self.eps_grid, self._order,
          cascade=bool(getattr(attack, 'stages', None)))
      out[name]['step_loop'] = step_loop
      logging.info('Attack %s: %d examples x %d eps in %.1f s (compile '
                   '%.1f s).', name, n, len(self.eps_grid),
                   out[name]['seconds'],
                   sum(out[name]['compile_seconds'].values()))
    return out

  def _run_attack(self, a_idx, attack, st: _AttackState, variables, x, y,
                  clean_pred, clean_fin, step, seed, checkpoint) -> None:
    stages = stages_of(attack)
    cascade = bool(getattr(attack, 'stages', None))
    # Points settled before any attack (idempotent, so also on resume):
    # non-finite clean outputs, and for a cascade the clean
    # misclassifications (AutoAttack's stage 0).
    attack_wrong = self.consistency and not cascade
    settled = ~clean_fin | ((clean_pred != y) if not attack_wrong else False)
    st.decided_at[settled] = 0
    st.stage_of[settled] = 0
    st.nonfinite[~clean_fin] = True
    st.inconsistent[~clean_fin] = True
    ok = (clean_pred == y) & clean_fin
    root = jax.random.fold_in(jax.random.key(int(seed)), a_idx)
    n_stages = len(stages)
    while st.cursor[0] < len(self._order):
      k, s, b0 = st.cursor
      eps = float(self.eps_grid[self._order[k]])
      if eps == 0.0:  # kernels return x exactly at eps 0: nothing to find
        st.cursor = [k + 1, 0, 0]
        continue
      if b0 == 0:
        st.stage_open = st.decided_at == _NONE
      open_idx = np.flatnonzero(st.stage_open)
      audit_idx = scheduler_state.audit_points(
          st, self.eps_grid[self._order], k, s, (seed, a_idx), self.audit,
          ok=ok, first_stage=1 if cascade else 0)
      idx = np.concatenate([open_idx, audit_idx])
      stage_name, kernel = stages[s]
      shares = self._shares(kernel)
      kernel = self._callable(kernel)
      key = jax.random.fold_in(root, k * n_stages + s)
      for b, (bidx, n_valid) in enumerate(
          _buckets(idx, step, self.min_bucket, self.num_devices,
                   self._growth(stages[s][1]))):
        if b < b0:
          continue
        with _timed(st.times, stage_name):
          pred, fin = self._attack_bucket(kernel, variables, x, y, bidx,
                                          jax.random.fold_in(key, b), eps,
                                          shares)
        self.calls.append((attack.name, stage_name, eps, bidx[:n_valid]))
        scheduler_state.scatter(
            st, bidx[:n_valid], pred[:n_valid], fin[:n_valid], clean_pred,
            k, s + (1 if cascade else 0), n_audit_from=len(open_idx),
            lo=b * step)
        st.cursor = [k, s, b + 1]
        checkpoint()
      st.cursor = [k, s + 1, 0] if s + 1 < n_stages else [k + 1, 0, 0]
      checkpoint()

  def _shares(self, kernel: Callable) -> int:
    """Devices a stage's buckets are split over (`workers`): all for a
    long stage (`LONG_STAGE_EVALS` model evaluations per point or more, and
    a model whose steps are not rolled), else one: a short stage compiles
    on each device for longer than the split saves (the builtin quick
    study took 278 s with every stage split, 252 s on one device)."""
    if self.cheap or stage_evals(kernel) < LONG_STAGE_EVALS:
      return 1
    return self.workers.size

  def _attack_bucket(self, kernel, variables, x, y, bidx, key, eps,
                     shares: int):
    """(prediction, finite) on the kernel's output for the rows `bidx`;
    split over `shares` CPU devices, each runs its share (`workers`)."""
    if shares == 1:
      return self._attack_share(kernel, variables, self._put(x[bidx]),
                                self._put(y[bidx]), key, eps)
    parts, reps = self.workers.parts(len(bidx)), self.workers.replicas(
        variables)

    def share(d, device):  # retiring shrinks a share as the whole bucket
      rows = bidx[parts[d]]
      put = lambda a: jax.device_put(a, device)
      with loops.retire_as(max(1, self.min_bucket // shares)
                           if self.retire else None):
        return self._attack_share(kernel, reps[d], put(x[rows]),
                                  put(y[rows]), put(jax.random.fold_in(
                                      key, d)), eps)
    outs = self.workers.map(share)
    return tuple(np.concatenate([o[i] for o in outs]) for i in (0, 1))

  def _attack_share(self, kernel, variables, xb, yb, key, eps):
    x_adv = kernel(variables, xb, yb, key, jnp.asarray(eps, xb.dtype))
    if isinstance(x_adv, tuple):  # kernels built with return_info=True
      x_adv = x_adv[0]
    pred, fin = self._predict(variables, x_adv)
    return np.asarray(pred), np.asarray(fin)
