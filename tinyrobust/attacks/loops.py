"""The step-loop driver shared by every iterative attack kernel.

    carry = run_loop(body, carry, steps, args=(variables, x, y, eps_b),
                     loop='auto', chunk=None, stop=None)

runs `carry = body(i, carry, *args)` for `i = start, ..., start + steps - 1`
(`i` an int32 scalar) in one of these forms (`LOOPS`):

* 'host': a Python loop over one jitted chunk of `chunk` steps (unrolled
  inside the chunk), the carry donated to it (`donate_argnums`), so no step
  pays XLA:CPU's rolled-loop cost and no compile grows with `steps`. Only
  with concrete inputs: when any leaf of `carry` or `args` is a tracer
  (under an outer `jit`, `vmap`, `grad`, `scan`), 'host' runs as 'fori', so
  a kernel built on `run_loop` stays pure, jittable and vmappable. The
  caller's arrays are never donated (the carry is copied once first).
* 'fori': `lax.fori_loop` (a `lax.while_loop` when `stop` is given).
* an int u >= 1: `lax.fori_loop(..., unroll=u)` (`stop` is then ignored).
* 'scan': `lax.scan` over the step indices (`stop` ignored).
* 'unroll': a Python loop inside the caller's trace (`stop` ignored).
* 'auto' (and None): `default_loop()`, 'host' on CPU, 'fori' on GPU/TPU;
  traced on CPU, 'unroll' up to `TRACED_UNROLL_STEPS` steps, else 'fori'.
  Inside `with auto_as(mode):` 'auto' means `mode` instead: the scheduler
  sets 'fori' for a model whose steps are dispatch-bound (`auto_for`).
  A single step always runs unrolled.

Contract for `body`: pure; defined ONCE per kernel (in the factory, not
per call), because the jitted chunk is cached per `body` object (and chunk
length): repeated calls with the same shapes never retrace, and the model's
variables travel in `args` (traced arguments of the chunk, not donated),
never in a closure, so one kernel serves any model variables. Anything
closed over must be static (Python numbers, NumPy tables, other pure
functions).

Retiring decided examples (`done(carry) -> bool [B]`, `batched`): only in
'host' mode inside `with retire_as(min_size):` (the evaluation scheduler's
path). After each chunk, once at most half the rows are open (`done`
unset), the open ones are gathered into a smaller batch (`min_size` times a
power of `RETIRE_GROWTH`: few extra shapes compile), the others keep their
state, and the final carry has every row back in place. Every carry leaf
and each argument flagged in `batched` must have the batch axis first, and
the body must treat examples independently (no batch statistics or random
draws shaped by the batch): an open example's trajectory is unchanged, a
retired one's is cut short (so "found" must be sticky, and what a kernel
returns for a found example valid from the step it was found on).

Early stop (`stop(carry) -> bool []`): the body must leave the carry
unchanged (except what `stop` ignores) once `stop` is True, so stopping is
only a saving, never a change of result: every mode gives the same output.
'host' checks it before the first chunk and after each chunk (one host
sync per chunk), 'fori' after each step (in a `while_loop`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Any, Callable
import jax
import jax.numpy as jnp
import numpy as np

# Step-loop modes of `run_loop` (besides an int fori unroll factor).
LOOPS = ('auto', 'host', 'fori', 'scan', 'unroll')

Body = Callable[..., Any]

# Step-loop default per backend (experiments/bench_attacks.py, section (e)).
# On XLA:CPU a rolled `fori_loop`/`scan` costs ~2.3x per step whatever the
# body, an unrolled loop's compile grows with `steps`, and a host-driven
# jitted chunk with a donated carry runs near the floor with a compile flat
# in `steps`. Measured on the shared 2-core CPU (load ~12), run time best of
# 2 interleaved, compile apart: APGD-CE-100, digits CNN, batch 256: unroll
# 5.43 s (compile 529 s), fori 5.27 s (13 s), host 0.79 s (18 s), i.e. 0.15x
# both; PGD-10, ResNet8, batch 64: unroll 3.92 s (20 s), fori 17.3 s
# (18 s), host 2.65 s (19 s). GPU/TPU were not measured: a rolled
# `fori_loop` keeps one launch per attack there.
DEFAULT_LOOP = {'cpu': 'host', 'gpu': 'fori', 'cuda': 'fori',
                'rocm': 'fori', 'tpu': 'fori'}

# Steps per jitted chunk in 'host' mode, same run (--chunk_sizes=1,5,10,25;
# run s / compile s): APGD-CE-100 digits CNN b256: 1: 0.79/18, 5: 1.20/31,
# 10: 1.14/40, 25: 1.25/100; PGD-10 ResNet8 b64: 1: 2.65/19, 5: 2.36/30,
# 10: 3.15/29. One step per call is fastest or within the load noise (12%)
# of the fastest and always compiles least (larger unrolled chunks also
# fuse worse on XLA:CPU), so it is the default.
DEFAULT_CHUNK = 1

# Under an outer jit/vmap on CPU, where 'host' cannot run, 'auto' unrolls
# loops of at most this many steps instead of rolling them (and one step is
# never a loop, in any mode): measured (/work/logs/s3/prof_fgsm.py, ResNet8,
# batch 256, best of 5), `jax.jit(make_fgsm(...))` took 1.39 s rolled vs
# 0.45 s called eagerly (one input gradient: 0.38-0.43 s), and jitted
# PGD-10 13.8 s rolled, 3.4x its ten gradients; longer loops stay rolled
# (an unrolled APGD-100 compiled for 529 s).
TRACED_UNROLL_STEPS = 10

# A model whose jitted forward pass over one step's batch costs fewer flops
# than this (XLA's cost analysis, `auto_for`) is dispatch-bound on CPU: a
# host-driven step is mostly Python, dispatch and the per-step sync (about
# 0.3 ms here), so its steps run rolled. Measured on the 2-core CPU
# (experiments/bench_loop_choice.py, batch 100, run s host / rolled, compile
# apart): ProtoNN (1.4e5 flops) APGD-CE-100 0.020-0.044 / 0.012, Square-500
# 0.30-0.42 / 0.050; FastGRNN (6.7e6) APGD-CE 2.26-2.63 / 2.20-2.32, Square
# 4.7-6.2 / 4.0; ResNet8 (2.4e9, batch 32) APGD-CE 5.3-6.2 / 24.5, so
# convolutional models keep 'host'.
ROLL_BELOW_FLOPS = 1e7

_AUTO: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    'tinyrobust_auto_loop', default=None)
_RETIRE: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    'tinyrobust_retire', default=None)

# Batch sizes a retiring loop shrinks to: min_size * RETIRE_GROWTH**j (each
# compiles the step anew; with min_size 8: 8, 32, 128, ... rows).
RETIRE_GROWTH = 4

# The jitted chunks live on the body (and the jitted stop on `stop`) as an
# attribute, so they are freed with the kernel that defined the body.
_CACHE_ATTR = '_tinyrobust_jitted'


def default_loop(backend: str | None = None) -> str:
  """The loop mode 'auto' stands for on `backend` (default: the current
  backend, or the mode of an enclosing `auto_as`)."""
  if backend is None and _AUTO.get() is not None:
    return _AUTO.get()
  backend = jax.default_backend() if backend is None else backend
  return DEFAULT_LOOP.get(backend, 'fori')


@contextlib.contextmanager
def auto_as(mode: str | None):
  """Within the block, 'auto' means `mode` ('host' or 'fori'; None: the
  backend's default). Per thread (a context variable)."""
  if mode not in (None, 'host', 'fori'):
    raise ValueError(f"auto_as takes None, 'host' or 'fori', got {mode!r}.")
  token = _AUTO.set(mode)
  try:
    yield
  finally:
    _AUTO.reset(token)


@contextlib.contextmanager
def retire_as(min_size: int | None):
  """Within the block, host-driven loops given a per-example `done` stop
  stepping decided examples (see the module docstring); the batch shrinks
  to no fewer than `min_size` rows. None: off. Per thread."""
  if min_size is not None and (isinstance(min_size, bool) or not isinstance(
      min_size, (int, np.integer)) or min_size < 1):
    raise ValueError(f'retire_as takes None or an int >= 1, got '
                     f'{min_size!r}.')
  token = _RETIRE.set(None if min_size is None else int(min_size))
  try:
    yield
  finally:
    _RETIRE.reset(token)


def auto_for(fn: Callable, *args: Any) -> str:
  """What 'auto' should mean for steps around the jitted `fn(*args)` (one
  step's forward pass): 'fori' when the backend's default is 'host' and XLA's
  cost analysis puts `fn` below `ROLL_BELOW_FLOPS` (dispatch-bound), else the
  default. Lowers `fn` without compiling it; deterministic for a model and
  shape, so a resumed evaluation makes the same choice."""
  default = default_loop()
  if default != 'host':
    return default
  flops = forward_flops(fn, *args)
  return 'fori' if 0.0 <= flops < ROLL_BELOW_FLOPS else default


def forward_flops(fn: Callable, *args: Any) -> float:
  """XLA's cost-analysis flops of `jax.jit(fn)(*args)`, lowered but not
  compiled; -1.0 where the backend gives no cost analysis."""
  try:
    cost = jax.jit(fn).lower(*args).cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return -1.0
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per program
    cost = cost[0] if cost else None
  return float((cost or {}).get('flops', -1.0))


def check_loop(loop: Any) -> None:
  """ValueError unless `loop` is None, a name in `LOOPS` or an int >= 1."""
  if loop is None or loop in LOOPS:
    return
  if isinstance(loop, (int, np.integer)) and not isinstance(loop, bool) \
      and loop >= 1:
    return
  raise ValueError(f'loop must be None, one of {", ".join(LOOPS)} or an int '
                   f'unroll factor >= 1, got {loop!r}.')


def check_chunk(chunk: Any) -> None:
  """ValueError unless `chunk` is None or an int >= 1."""
  if chunk is None:
    return
  if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) \
      or chunk < 1:
    raise ValueError(f'chunk must be None or an int >= 1 (steps per jitted '
                     f'call in loop="host" mode), got {chunk!r}.')


def is_traced(*trees: Any) -> bool:
  """True if any leaf of the pytrees is a tracer (inside jit/vmap/grad)."""
  return any(isinstance(a, jax.core.Tracer)
             for a in jax.tree.leaves(trees))


def resolve(loop: Any, *trees: Any) -> str | int:
  """The concrete mode for these inputs: 'auto'/None -> `default_loop()`,
  then 'host' -> 'fori' when any leaf of `trees` is a tracer."""
  check_loop(loop)
  mode = default_loop() if loop in (None, 'auto') else loop
  if mode == 'host' and is_traced(*trees):
    return 'fori'
  return int(mode) if isinstance(mode, (int, np.integer)) else mode


def host_mode(loop: Any, *trees: Any) -> bool:
  """True if `run_loop(..., loop=loop)` on these inputs drives from Python
  (so the caller should also run its outer loops in Python)."""
  return resolve(loop, *trees) == 'host'


def _cache(fn: Callable) -> dict:
  """The dict of jitted functions attached to `fn` (a function or partial)."""
  cache = getattr(fn, _CACHE_ATTR, None)
  if cache is None:
    cache = {}
    try:
      setattr(fn, _CACHE_ATTR, cache)
    except AttributeError:
      raise ValueError(f'loop="host" caches its jitted chunk on the body and '
                       f'stop functions, so they must be plain functions (or '
                       f'functools.partial), got {fn!r}.') from None
  return cache


def _chunk_fn(body: Body, n: int, stop: Callable | None):
  """The jitted `f(i0, carry, *args)`: n unrolled steps (and stop flag)."""
  per_body = _cache(body)
  key = ('chunk', n, stop)
  if key not in per_body:

    def chunk(i0, carry, *args):
      for j in range(n):
        carry = body(i0 + j, carry, *args)
      return carry if stop is None else (carry, stop(carry))

    per_body[key] = jax.jit(chunk, donate_argnums=(1,))
  return per_body[key]


def _jitted(fn: Callable):
  """`jax.jit(fn)`, cached on `fn` (a `stop` or `done` function)."""
  cache = _cache(fn)
  if 'jit' not in cache:
    cache['jit'] = jax.jit(fn)
  return cache['jit']


@jax.jit
def _take(tree, rows):
  return jax.tree.map(lambda a: a[rows], tree)


@functools.partial(jax.jit, donate_argnums=(0,))
def _put_rows(full, sub, rows):
  """`full` with `sub`'s rows written at `rows` (out-of-range ones are the
  padding: dropped)."""
  return jax.tree.map(lambda f, s: f.at[rows].set(s, mode='drop'), full, sub)


def _devices(tree) -> int:
  """Devices the batch is spread over (the shrunk batch must divide)."""
  return max([len(getattr(a, 'sharding', None).device_set)
              for a in jax.tree.leaves(tree)
              if getattr(a, 'sharding', None) is not None] or [1])


def _like(sub, full):
  """`sub` laid out as `full` (batch-sharded on several devices)."""
  def put(s, f):
    multi = hasattr(f, 'sharding') and len(f.sharding.device_set) > 1
    return jax.device_put(s, f.sharding) if multi else s
  return jax.tree.map(put, sub, full)


def _shrunk(n_open: int, size: int, min_size: int, multiple: int):
  """The smaller batch for `n_open` rows, or None if not at most half."""
  m = min_size
  while m < n_open:
    m *= RETIRE_GROWTH
  m = -(-m // multiple) * multiple
  return m if 2 * m <= size else None


def _padded(rows: np.ndarray, n_valid: int, size: int) -> jax.Array:
  """`rows` with the padding rows pointing past the end (dropped)."""
  return jnp.asarray(np.where(np.arange(len(rows)) < n_valid, rows, size))


def _host(body, carry, steps, args, start, chunk, stop, retire=None):
  """Steps driven from Python, one jitted chunk per call. `retire`: None,
  or `(done, batched, min_size)`: before each chunk the open rows are
  gathered into a smaller batch once at most half are open (see the module
  docstring); `rows[:n_valid]` maps the live batch to the full one, which
  is materialised at the first shrink."""
  n = min(chunk, steps)
  if stop is not None and bool(_jitted(stop)(carry)):
    return carry
  # Fresh buffers: the donated carry must never alias the caller's arrays.
  carry = jax.tree.map(jnp.copy, carry)
  size = jax.tree.leaves(carry)[0].shape[0] if retire else 0
  multiple = _devices((carry, args)) if retire else 1
  full, rows, n_valid, live_args = None, np.arange(size), size, args
  i, end = start, start + steps
  while i < end:
    if retire:
      done, batched, min_size = retire
      open_rows = np.flatnonzero(~np.asarray(_jitted(done)(carry))[:n_valid])
      if not len(open_rows):
        break
      m = _shrunk(len(open_rows), len(rows), min_size, multiple)
      if m is not None:
        full = carry if full is None else _put_rows(
            full, carry, _padded(rows, n_valid, size))
        new = rows[open_rows]
        rows = np.concatenate([new, np.full(m - len(new), new[0])])
        n_valid, idx = len(new), jnp.asarray(rows)
        carry = _like(_take(full, idx), full)
        live_args = tuple(_like(_take(a, idx), a) if b else a
                          for a, b in zip(args, batched))
    m = min(n, end - i)
    out = _chunk_fn(body, m, stop)(np.int32(i), carry, *live_args)
    i += m
    carry = out if stop is None else out[0]
    if stop is not None and i < end and bool(out[1]):
      break
  if full is None:
    return carry
  return _put_rows(full, carry, _padded(rows, n_valid, size))


def _rolled(body, carry, steps, args, start, loop, stop):
  step = lambda i, c: body(i, c, *args)
  lo, hi = np.int32(start), np.int32(start + steps)
  if loop == 'scan':
    return jax.lax.scan(lambda c, i: (step(i, c), None), carry,
                        jnp.arange(lo, hi, dtype=jnp.int32))[0]
  if stop is not None and loop == 'fori':
    cond = lambda c: (c[0] < hi) & ~stop(c[1])
    return jax.lax.while_loop(cond, lambda c: (c[0] + 1, step(*c)),
                              (lo, carry))[1]
  unroll = 1 if loop == 'fori' else min(int(loop), steps)
  return jax.lax.fori_loop(lo, hi, step, carry, unroll=unroll)


def run_loop(body: Body, carry: Any, steps: int, *, args: tuple = (),
             start: int = 0, loop: str | int | None = 'auto',
             chunk: int | None = None,
             stop: Callable[[Any], Any] | None = None,
             done: Callable[[Any], Any] | None = None,
             batched: tuple[bool, ...] | None = None) -> Any:
  """Runs `carry = body(i, carry, *args)` for `steps` steps from `start`.

  Args:
    body: `body(i, carry, *args) -> carry`, pure, same structure, shapes and
      dtypes in and out; `i` an int32 scalar. Defined once per kernel (see
      the module docstring: the jitted chunk is cached per body object).
    carry: the loop state, a pytree of arrays (donated in 'host' mode after
      one copy, so the caller's arrays stay valid).
    steps: number of steps, an int >= 0 (0 returns `carry`).
    args: pytree arguments passed unchanged to every step (model variables,
      the clean input, eps, ...); never donated.
    start: index of the first step.
    loop: a mode of `LOOPS` or an int unroll factor (see the module
      docstring); None means 'auto'.
    chunk: steps per jitted call in 'host' mode (None: `DEFAULT_CHUNK`);
      a last partial chunk compiles once more at its own length.
    stop: optional `stop(carry) -> bool []` for an early exit (see the
      module docstring for the contract that makes it result-neutral).
    done: optional `done(carry) -> bool [B]`, the examples that may retire
      inside `retire_as` (see the module docstring); ignored elsewhere.
    batched: with `done`, per entry of `args` whether it has the batch axis.

  Returns:
    The final carry.

  Raises:
    ValueError: a bad `loop`, `chunk` or `steps`.
  """
  check_chunk(chunk)
  if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) \
      or steps < 0:
    raise ValueError(f'steps must be an int >= 0, got {steps!r}.')
  mode = resolve(loop, carry, args)
  steps, start = int(steps), int(start)
  if steps == 0:
    return carry
  if mode != 'host' and (steps == 1 or (
      loop in (None, 'auto', 'host') and default_loop() == 'host'
      and steps <= TRACED_UNROLL_STEPS)):
    mode = 'unroll'  # same output, see TRACED_UNROLL_STEPS
  if mode == 'host':
    retire = None
    if done is not None and _RETIRE.get():
      if batched is None or len(batched) != len(args):
        raise ValueError(f'done needs batched: one bool per entry of args '
                         f'({len(args)}), got {batched!r}.')
      retire = (done, batched, _RETIRE.get())
    return _host(body, carry, steps, args, start,
                 DEFAULT_CHUNK if chunk is None else int(chunk), stop, retire)
  if mode == 'unroll':
    for i in range(start, start + steps):
      carry = body(np.int32(i), carry, *args)
    return carry
  return _rolled(body, carry, steps, args, start, mode, stop)


def scan_or_loop(f: Callable[[Any, Any], Any], carry: Any, xs: Any, *,
                 host: bool) -> Any:
  """`carry = f(carry, x)` over the leading axis of `xs`: a Python loop
  when `host` (so `f` may drive `run_loop` from the host and should be made
  of jitted pieces), else `lax.scan`. Returns the final carry."""
  if not host:
    return jax.lax.scan(lambda c, x: (f(c, x), None), carry, xs)[0]
  n = jax.tree.leaves(xs)[0].shape[0]
  for k in range(n):
    carry = f(carry, jax.tree.map(lambda a, k=k: a[k], xs))
  return carry
