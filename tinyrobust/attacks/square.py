"""Square attack (Andriushchenko et al., ECCV 2020): score-based, no gradients.

A random search that needs only the model's scores: from a start on the
eps-sphere it proposes, per example, a change of one random window
("square") and keeps it when the loss improves (or the example becomes
misclassified). Examples already misclassified stop changing. The window
covers a fraction p of the spatial positions, halved at iterations 10, 50,
200, 500, 1000, 2000, 4000, 6000, 8000 rescaled to `queries / 10000`
(`square_p`).

Layout: examples are `[D]` (1-D, one channel), `[T, C]` (1-D windows over T,
C channels) or `[H, W, C]` (2-D squares, channels last, as Flax convs use).

* L-inf: start from vertical stripes (a random +-eps per column and
  channel, constant along the first spatial axis; per element for 1-D), and
  set one window per step to a random +-eps per channel.
* L2: start from a grid of pseudo-Gaussian blocks with random signs, and per
  step move the perturbation mass of a second random window into the first
  one with a new pseudo-Gaussian bump; the perturbation is kept on the
  eps-sphere.

With `eps_scale` everything happens in the scaled space (as in `make_pgd`);
`clip` comes last. Departures from the authors' code: window positions and
signs are drawn per example (the code shares one window per iteration
across the batch) and the last window position is reachable
(`corners='all'`; 'authors' as the code: on 8x8 digits, mostly 1x1 windows,
'all' is 11 points stronger at eps 0.1, experiments/bench_autoattack.py).

Two ways to run: `host=False` (default) is a pure, jitted kernel around
`apply_fn` (per window size a `loops.run_loop` that stops once every
example is misclassified: by default a `lax.while_loop`, on CPU too, see
`SQUARE_CHUNK`); `host=True` calls `apply_fn(variables, x_np)` as
a plain host function on NumPy arrays (e.g. an int8 LiteRT interpreter),
only on the still-robust examples, with the proposal/update steps jitted.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from tinyrobust.attacks import build
from tinyrobust.attacks import checks
from tinyrobust.attacks import loops
from tinyrobust.attacks import losses
from tinyrobust.attacks import norms
from tinyrobust.attacks import registry
from tinyrobust.attacks import square_host
from tinyrobust.attacks import threat as threat_lib

ApplyFn = Callable[[Any, Any], Any]
P_HALVING_ITERS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
# loop='auto' is a rolled `lax.while_loop` per window size on every backend:
# on CPU too it beats one jitted call per query, in run and compile time
# (experiments/bench_loop_choice.py, 500 queries, run s host / rolled:
# ProtoNN 0.30-0.42 / 0.050, FastGRNN 4.7-6.2 / 4.0, DS-CNN 35.9-41.1 /
# 27.1-29.5, ResNet8 14.6-14.9 / 12.7-13.8). With loop='host', per call:
SQUARE_CHUNK = 1
# Window positions: every corner, or the authors' range [0, n - side).
CORNERS = ('all', 'authors')


def square_p(i: int, queries: int, p_init: float) -> float:
  """Fraction of positions changed at iteration `i` of `queries`: p_init
  halved once per `P_HALVING_ITERS` entry below `i * 10000 / queries`."""
  it = int(i / queries * 10000)
  return p_init / 2 ** sum(it > t for t in P_HALVING_ITERS)


def layout(example_shape: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
  """`(spatial shape, channels)` of one example; ValueError for rank > 3."""
  shape = tuple(int(d) for d in example_shape)
  if len(shape) == 1:
    return shape, 1
  if len(shape) in (2, 3):
    return shape[:-1], shape[-1]
  raise ValueError(f'Square supports examples of shape [D], [T, C] or '
                   f'[H, W, C], got {shape}.')


def window_side(p: float, spatial: tuple[int, ...], norm: str) -> int:
  """Window side for fraction p: `round((p * positions) ** (1 / rank))`,
  >= 1 (L-inf) or an odd number >= 3 (L2), at most the smallest side."""
  s = int(round((p * math.prod(spatial)) ** (1.0 / len(spatial))))
  s = max(s, 1 if norm == 'linf' else 3)
  if norm == 'l2' and s % 2 == 0:
    s += 1
  s = min(s, min(spatial))
  if norm == 'l2' and s % 2 == 0 and s > 1:
    s -= 1
  return s


def square_phases(queries: int, p_init: float, spatial: tuple[int, ...],
                  norm: str) -> list[tuple[int, int, int]]:
  """`[(start, end, side)]`: iterations [start, end) use windows of `side`."""
  out = []
  for i in range(queries):
    s = window_side(square_p(i, queries, p_init), spatial, norm)
    if out and out[-1][2] == s:
      out[-1] = (out[-1][0], i + 1, s)
    else:
      out.append((i, i + 1, s))
  return out


def _bumps(n: int) -> np.ndarray:
  """1-D analogue of the authors' nested rectangles, unit norm."""
  d = np.zeros(n)
  c = n // 2
  for k in range(c + 1):
    d[max(c - k, 0):min(c + k + 1, n)] += 1.0 / (k + 1) ** 2
  return d / max(np.linalg.norm(d), 1e-12)


def _rectangles(n: int, m: int) -> np.ndarray:
  d = np.zeros((n, m))
  c0, c1 = n // 2, m // 2
  for k in range(max(c0, c1) + 1):
    d[max(c0 - k, 0):min(c0 + k + 1, n),
      max(c1 - k, 0):min(c1 + k + 1, m)] += 1.0 / (k + 1) ** 2
  return d / max(np.linalg.norm(d), 1e-12)


def eta(s: int, rank: int) -> np.ndarray:
  """The pseudo-Gaussian window of side `s`: a positive bump over the first
  half and a negative one over the second (along axis 0), unit L2 norm."""
  h = s // 2
  if rank == 1:
    d = np.concatenate([_bumps(h), -_bumps(s - h)])
  else:
    d = np.concatenate([_rectangles(h, s), -_rectangles(s - h, s)], axis=0)
  return (d / max(np.linalg.norm(d), 1e-12)).astype(np.float32)


def _rademacher(key, shape, dtype):
  return jax.random.rademacher(key, shape, jnp.int8).astype(dtype)


def _window(key, b: int, spatial: tuple[int, ...], s: int,
            corners: str = 'all'):
  """`[B, *spatial]` bool windows of side `s` at random per-example
  positions, and their corners `[rank, B]` (`CORNERS`)."""
  r = len(spatial)
  hi = (lambda n: n - s + 1) if corners == 'all' else (
      lambda n: max(n - s, 1))
  starts = [jax.random.randint(k, (b,), 0, hi(n))
            for k, n in zip(jax.random.split(key, r), spatial)]
  mask = jnp.ones((b,) + spatial, bool)
  for a, (st, n) in enumerate(zip(starts, spatial)):
    iota = jnp.arange(n).reshape([n if j == a else 1 for j in range(r)])
    st = st.reshape((b,) + (1,) * r)
    mask = mask & (iota >= st) & (iota < st + s)
  return mask, jnp.stack(starts)


def _place(pattern: np.ndarray, starts: jax.Array,
           spatial: tuple[int, ...], dtype) -> jax.Array:
  """`pattern` written into zeros of `spatial` at each example's corner."""
  zeros = jnp.zeros(spatial, dtype)
  pat = jnp.asarray(pattern, dtype)
  return jax.vmap(lambda st: jax.lax.dynamic_update_slice(
      zeros, pat, tuple(st[i] for i in range(len(spatial)))))(starts.T)


def _flipped(pattern: np.ndarray) -> np.ndarray:
  return pattern.T.copy() if pattern.ndim == 2 else pattern[::-1].copy()


class _Geometry:
  """Square's proposals for one threat and example layout (all traceable)."""

  def __init__(self, threat: threat_lib.Threat, example_shape,
               corners: str = 'all'):
    self.threat, self.corners = threat, corners
    self.spatial, self.c = layout(example_shape)
    self.r = len(self.spatial)

  def canon(self, a):
    return a.reshape((a.shape[0],) + self.spatial + (self.c,))

  def _eps(self, eps_b):
    return eps_b.reshape((eps_b.shape[0],) + (1,) * (self.r + 1))

  def _l2(self, u):
    return jnp.sqrt(jnp.sum(u * u, axis=tuple(range(1, u.ndim)),
                            keepdims=True))

  def init(self, key, x, eps_b):
    """x^(0): vertical stripes (L-inf) or pseudo-Gaussian blocks (L2)."""
    t = self.threat
    if t.norm == 'linf':
      shape = (1,) + self.spatial[1:] if self.r == 2 else self.spatial
      sign = _rademacher(key, (x.shape[0],) + shape + (self.c,), x.dtype)
      u = jnp.broadcast_to(sign, (x.shape[0],) + self.spatial + (self.c,))
      return t.project(x, x + t.to_delta(u.reshape(x.shape) * eps_b), eps_b)
    u = self._l2_blocks(key, x.shape[0], x.dtype)
    u = u / (1e-12 + self._l2(u)) * self._eps(eps_b)
    return t.clip(x + t.to_delta(u.reshape(x.shape)))

  def _l2_blocks(self, key, b, dtype):
    s0 = max(min(self.spatial) // 5, 1)
    pat = eta(s0, self.r)
    tmpl, tmpl_f = [], []
    grids = [range(max((n - 5 * s0) // 2, 0), n, s0) for n in self.spatial]
    for corner in np.array(np.meshgrid(*grids, indexing='ij')).reshape(
        self.r, -1).T:
      for p, out in ((pat, tmpl), (_flipped(pat), tmpl_f)):
        full = np.zeros([n + s0 for n in self.spatial], np.float32)
        full[tuple(slice(c, c + s0) for c in corner)] = p
        out.append(full[tuple(slice(0, n) for n in self.spatial)])
    k1, k2 = jax.random.split(key)
    flip = jax.random.bernoulli(k1, 0.5, (len(tmpl),))
    blocks = jnp.where(flip.reshape((-1,) + (1,) * self.r),
                       jnp.asarray(np.stack(tmpl_f), dtype),
                       jnp.asarray(np.stack(tmpl), dtype))
    sign = _rademacher(k2, (b, len(tmpl), self.c), dtype)
    return jnp.einsum('n...,bnc->b...c', blocks, sign)

  def proposal(self, s: int):
    """`propose(key, x, x_best, eps_b) -> x_new` for windows of side `s`."""
    return self._linf_proposal(s) if self.threat.norm == 'linf' else \
        self._l2_proposal(s)

  def _linf_proposal(self, s):
    t = self.threat

    def propose(key, x, x_best, eps_b):
      k1, k2 = jax.random.split(key)
      mask, _ = _window(k1, x.shape[0], self.spatial, s, self.corners)
      sign = _rademacher(k2, (x.shape[0],) + (1,) * self.r + (self.c,),
                         x.dtype)
      u = (2.0 * mask[..., None] * sign).reshape(x.shape)
      return t.project(x, x_best + t.to_delta(u * eps_b), eps_b)

    return propose

  def _l2_proposal(self, s):
    t, pat = self.threat, eta(s, self.r)
    sp_axes = tuple(range(1, self.r + 1))

    def propose(key, x, x_best, eps_b):
      k1, k2, k3, k4 = jax.random.split(key, 4)
      b, eps = x.shape[0], self._eps(eps_b)
      u = self.canon(t.to_scaled(x_best - x))
      w1, corner = _window(k1, b, self.spatial, s, self.corners)
      w1, w2 = w1[..., None], _window(k2, b, self.spatial, s,
                                      self.corners)[0][..., None]
      norm_w1 = jnp.sqrt(jnp.sum(jnp.where(w1, u * u, 0.0), sp_axes,
                                 keepdims=True))
      norm_ws = self._l2(jnp.where(w1 | w2, u, 0.0))
      slack = jnp.maximum(eps ** 2 - self._l2(u) ** 2, 0.0) / self.c
      flip = jax.random.bernoulli(k3, 0.5, (b,) + (1,) * self.r)
      bump = jnp.where(flip, _place(_flipped(pat), corner, self.spatial,
                                    x.dtype),
                       _place(pat, corner, self.spatial, x.dtype))[..., None]
      sign = _rademacher(k4, (b,) + (1,) * self.r + (self.c,), x.dtype)
      new = bump * sign + jnp.where(w1, u / (1e-12 + norm_w1), 0.0)
      norm_new = jnp.sqrt(jnp.sum(new * new, sp_axes, keepdims=True))
      new = new / (1e-12 + norm_new) * jnp.sqrt(slack + norm_ws ** 2)
      u = jnp.where(w1, new, jnp.where(w2, 0.0, u))
      u = u / (1e-12 + self._l2(u)) * eps
      return t.clip(x + t.to_delta(u.reshape(x.shape)))

    return propose


def _scores(logits, y, loss_fn):
  """(label margin, objective to minimise = minus the attacker's loss)."""
  return losses.label_margin(logits, y), -loss_fn(jnp.asarray(logits), y)


def _start_state(x0, logits, y, loss_fn):
  margin, obj = _scores(logits, y, loss_fn)
  return dict(x_best=x0, margin=margin, obj=obj,
              queries=jnp.ones(x0.shape[0], jnp.int32))


def _update(st, x_new, logits, y, loss_fn):
  """Keep x_new where the objective improved or it is misclassified; only
  for examples not yet misclassified."""
  margin, obj = _scores(logits, y, loss_fn)
  active = st['margin'] > 0
  improved = active & (obj < st['obj'])
  take = improved | (active & (margin <= 0))
  rows = take.reshape(take.shape + (1,) * (x_new.ndim - 1))
  return dict(x_best=jnp.where(rows, x_new, st['x_best']),
              margin=jnp.where(take, margin, st['margin']),
              obj=jnp.where(improved, obj, st['obj']),
              queries=st['queries'] + active.astype(jnp.int32))


def _square_run(apply_fn, threat, *, queries, p_init, loss_fn, loop, chunk,
                corners):
  """The jitted-path core: `run(variables, x, y, key, eps_b)`; each window
  size's iterations go through `loops.run_loop` (stopping once every
  example is misclassified). Bodies are built once per (example shape,
  window side) and kept here, so host-driven calls never retrace."""
  bodies: dict[Any, Callable] = {}

  def body_for(example_shape, s):
    if (example_shape, s) not in bodies:
      propose = _Geometry(threat, example_shape, corners).proposal(s)

      def body(i, st, variables, x, y, key, eps_b):
        x_new = propose(jax.random.fold_in(key, i), x, st['x_best'], eps_b)
        return _update(st, x_new, apply_fn(variables, x_new), y, loss_fn)

      bodies[(example_shape, s)] = body
    return bodies[(example_shape, s)]

  def stop(st):
    return ~jnp.any(st['margin'] > 0)

  @jax.jit
  def start(variables, x, y, key, eps_b):
    geo = _Geometry(threat, x.shape[1:], corners)
    k_init, key = jax.random.split(key)
    x0 = geo.init(k_init, x, eps_b)
    return _start_state(x0, apply_fn(variables, x0), y, loss_fn), key

  def run(variables, x, y, key, eps_b):
    shape = tuple(x.shape[1:])
    st, key = start(variables, x, y, key, eps_b)
    for first, end, s in _phases(queries, p_init, layout(shape)[0],
                                 threat.norm):
      st = loops.run_loop(body_for(shape, s), st, end - first, start=first,
                          args=(variables, x, y, key, eps_b), loop=loop,
                          chunk=chunk, stop=stop)
    return st['x_best'], {'queries': st['queries']}

  return run


_PHASES: dict[Any, list] = {}


def _phases(queries, p_init, spatial, norm):
  sig = (queries, p_init, spatial, norm)
  if sig not in _PHASES:
    _PHASES[sig] = square_phases(queries, p_init, spatial, norm)
  return _PHASES[sig]


def _check_square_options(*, queries, p_init, loss, host, loop, chunk,
                          corners):
  if isinstance(queries, bool) or not isinstance(
      queries, (int, np.integer)) or queries < 1:
    raise ValueError(f'queries must be an int >= 1, got {queries!r}.')
  if isinstance(p_init, bool) or not isinstance(
      p_init, (int, float, np.integer, np.floating)) or not (
          0.0 < p_init <= 1.0):
    raise ValueError(f'p_init must be a number in (0, 1], got {p_init!r}.')
  losses.get_loss(loss)
  if not isinstance(host, bool):
    raise ValueError(f'host must be a bool, got {host!r}.')
  loops.check_loop(loop)
  loops.check_chunk(chunk)
  if corners not in CORNERS:
    raise ValueError(f'corners must be one of {CORNERS}, got {corners!r}.')


def make_square(apply_fn: ApplyFn, *, norm: str = 'linf',
                queries: int = 5000, p_init: float = 0.8,
                loss: str = 'margin', clip: tuple[Any, Any] | None = None,
                eps_scale: Any = None, host: bool = False,
                loop: str | int | None = 'auto', chunk: int | None = None,
                corners: str = 'all',
                return_info: bool = False) -> registry.Attack:
  """Builds the Square attack (see the module docstring).

  Args:
    apply_fn: `apply_fn(variables, x) -> logits [B, K]`. Never
      differentiated. With `host=False` it must be traceable JAX (a
      `jax.pure_callback` inside is fine); with `host=True` it is called on
      NumPy arrays outside JAX and returns NumPy logits (variables are passed
      through untouched, e.g. None for a LiteRT interpreter).
    norm: 'linf' or 'l2'.
    queries: search iterations after the initial query (the authors'
      n_queries; each costs one forward pass of the still-robust examples).
    p_init: initial fraction of positions per window (0.8 as in the paper).
    loss: the attacker's loss to raise, a name in `LOSSES` ('margin' as the
      paper, or 'ce', 'mse', 'dlr').
    clip: `(lo, hi)` valid range, scalars or arrays (as in `make_pgd`).
    eps_scale: per-feature eps scale (as in `make_pgd`).
    host: score with a host function in a Python loop (see above; not to
      be confused with `loop='host'`, which drives jitted JAX steps).
    loop: how the iterations of each window size run (`loops.run_loop`):
      'auto' (= 'fori', measured: see `SQUARE_CHUNK`) is a `lax.while_loop`
      stopping once no example is left (under an outer vmap a batched stop
      runs every iteration); 'host' is jitted chunks driven from Python,
      checking after each; 'unroll', 'scan' and int factors run all `queries`
      iterations (same result, no early stop). Ignored with `host=True`.
    chunk: iterations per jitted call in 'host' mode (None: `SQUARE_CHUNK`).
    corners: where a window may sit (`CORNERS`): 'all' positions, or
      'authors' (a corner in [0, n - side) per axis, as the authors' and
      torchattacks' code draw it, so the last row and column are never a
      window of side 1; for comparisons with them).
    return_info: also return the `make_pgd` info plus 'queries' [B], the
      forward passes spent per example.

  Returns:
    An `Attack` named 'square'. With `host=False` it is pure, jittable and
    vmappable over eps; with `host=True` it needs concrete inputs.
  """
  build.check_apply_fn(apply_fn)
  _check_square_options(queries=queries, p_init=p_init, loss=loss, host=host,
                        loop=loop, chunk=chunk, corners=corners)
  loop = 'fori' if loop in (None, 'auto') else loop  # see SQUARE_CHUNK
  threat = threat_lib.Threat.build(norm, clip, eps_scale)
  loss_fn = losses.get_loss(loss)
  config = dict(norm=norm, queries=queries, p_init=p_init, loss=loss,
                clip=clip, eps_scale=eps_scale, host=host, loop=loop,
                chunk=chunk, corners=corners)
  if host:
    kernel = square_host.HostSquare(
        apply_fn, threat, queries=int(queries), p_init=float(p_init),
        loss_fn=loss_fn, return_info=return_info, ops=sys.modules[__name__],
        corners=corners)
    return registry.Attack('square', build.jsonable(config),
                           _clip_checked(kernel, threat))
  run = _square_run(apply_fn, threat, queries=int(queries),
                    p_init=float(p_init), loss_fn=loss_fn, loop=loop,
                    chunk=SQUARE_CHUNK if chunk is None else chunk,
                    corners=corners)
  return build.build_attack('square', config, apply_fn, run, threat=threat,
                            return_info=return_info, extra_info=True,
                            loop=loop)


def _clip_checked(kernel, threat):
  """`kernel` (the host-driven Square) refusing, before any scoring, clean
  inputs outside the threat's clip range (`checks.check_in_clip`), as
  `build.build_attack` does for the JAX kernels."""

  def attack(variables, x, y, key, eps):
    checks.check_shapes(x, y, eps)
    if not checks.is_traced(x, y, eps):  # traced: the kernel says why not
      checks.check_in_clip(x, threat.lo, threat.hi, eps=eps)
    return kernel(variables, x, y, key, eps)

  return attack


registry.register_attack('square', make_square)
