"""FAB and FAB-T (Croce and Hein, ICML 2020), L-inf and L2, as pure JAX kernels.

The Fast Adaptive Boundary attack looks for the adversarial example of
minimal norm. At the iterate x1 it linearises the decision boundary between
the true class y and a class k (`<w, z> = b` with `w = grad(f_k - f_y)(x1)`,
`b = <w, x1> - (f_k - f_y)(x1)`), choosing k, untargeted, as the class whose
linearised boundary is nearest in the threat's norm
(`|f_k - f_y| / ||w||_dual`, the dual being L1 for L-inf and L2 for L2),
or, targeted, the fixed target class. It projects both x1 and the original
x0 onto that hyperplane intersected with the data box (`boundary_projection`,
the paper's `projection_linf` / `projection_l2`: the exact minimal-norm
point of the hyperplane inside the box, or, when the box does not reach the
hyperplane, the box corner nearest to it), giving d1 and d2, and steps

    alpha = min(max(||d1|| / (||d1|| + ||d2||), 0), alpha_max)
    x1 = clip((1 - alpha) (x1 + eta d1) + alpha (x0 + eta d2))

(overshoot eta). When x1 is misclassified it is recorded if it is the
nearest adversarial point so far, and x1 is pulled back towards x0:
`x1 = x0 + beta (x1 - x0)`. Defaults are the authors' (auto-attack's
fab_base.py / fab_pt.py): 100 steps, alpha_max 0.1, eta 1.05, beta 0.9; a
restart after the first starts from `x0 + eps / 2 * t / ||t||` (t uniform
for L-inf, Gaussian for L2), clipped.

FAB-T (`targeted=True`) runs one pass per target, the 2nd .. (n+1)-th most
likely classes on the clean input (n = `n_target_classes`, capped at K - 1),
times `restarts`, as AutoAttack's FAB-T; success still means "prediction !=
y" (as in the authors' code) and `y` holds the true labels.

Only correctly classified points are attacked. As in AutoAttack, a point
counts as broken only if the adversarial example found is within eps (in
the threat's, possibly scaled, norm): per example the output is the first
pass's example that is, else `x`, so an evaluator counting misclassified
outputs counts FAB's successes at this eps. With `return_info`,
`info['distance']` is the smallest adversarial distance found over the
passes run (0 for points misclassified clean, inf when none was found),
whatever eps. Passes run over the whole batch; once every point is done the
remaining passes are skipped (a Python `if` when the steps are host-driven,
`lax.cond` inside `lax.scan` otherwise; under a `vmap` over eps that skip
is a select, so everything runs). Host-driven, several passes run side by
side as one batch (`passes`), merged in pass order as one by one.

Steps run through `loops.run_loop` (`loop='auto'`: host-driven jitted
chunks with a donated carry on CPU, `lax.fori_loop` on GPU/TPU and under an
outer jit/vmap); every mode gives the same result for the same key (up to
float rounding of differently fused programs).

Cost per step: one forward and one input gradient for FAB-T (the target's
logit difference), K input gradients (one VJP per class) for untargeted
FAB, plus one forward to test the new iterate, and the projection's bisection
(`BISECTION_STEPS` fused passes over the 2B x D breakpoints).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from tinyrobust.attacks import build
from tinyrobust.attacks import loops
from tinyrobust.attacks import norms
from tinyrobust.attacks import passes
from tinyrobust.attacks import registry
from tinyrobust.attacks import threat as threat_lib

ApplyFn = Callable[[Any, jax.Array], jax.Array]


# Halvings of the bracket of the projection's theta (float32 resolution of
# a bracket up to 2**26 wide; see `boundary_projection`).
BISECTION_STEPS = 50


def _safe_div(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.where(b > 0, a / jnp.where(b > 0, b, 1.0), 0.0)


def boundary_projection(t: jax.Array, w: jax.Array, b: jax.Array, norm: str,
                        lo: jax.Array | None = None,
                        hi: jax.Array | None = None) -> jax.Array:
  """Minimal-norm step from `t` onto the hyperplane `<w, z> = b` in a box.

  Solves, per row, `min ||d||` (L-inf or L2) s.t. `<w, t + d> = b` and
  `lo <= t + d <= hi`. The optimum moves every coordinate against the side
  of `t` by `min(theta * k_i, room_i)` (k_i = 1 for L-inf, |w_i| for L2;
  room_i the distance to the box face in that direction), with theta the
  root of the piecewise-linear nondecreasing `h(theta) = sum_i |w_i|
  min(theta k_i, room_i)`: `BISECTION_STEPS` halvings of [0, largest
  breakpoint] (each one fused elementwise pass over the row) bracket it,
  then it is solved exactly on the linear piece the bracket identifies.
  (Sorting the breakpoints, as the authors do, gives the same step but was
  35x slower on XLA:CPU for 50 x 3072 rows: 104 vs 3 ms; its sort and
  gathers dominated FAB's step.) When even the box corner does not
  reach the hyperplane, the step goes to that corner (as the authors' code).
  Coordinates with `w_i = 0` do not move.

  Args:
    t: `[N, D]` points (inside the box).
    w: `[N, D]` hyperplane normals.
    b: `[N]` offsets.
    norm: 'linf' or 'l2'.
    lo, hi: box bounds broadcastable to `[N, D]`, or both None (no box).

  Returns:
    `d [N, D]`, the step (`t + d` is the projection).
  """
  c = jnp.sum(w * t, axis=1) - b
  side = jnp.where(c >= 0, 1.0, -1.0).astype(w.dtype)[:, None]
  w = w * side                    # now <w, t> - b = |c| >= 0: decrease it
  c = jnp.abs(c)[:, None]
  aw = jnp.abs(w)
  k = jnp.ones_like(w) if norm == 'linf' else aw
  direction = -jnp.sign(w)
  if lo is None:
    theta = _safe_div(c, jnp.sum(aw * k, axis=1, keepdims=True))
    return direction * theta * k
  room = jnp.maximum(jnp.where(w < 0, hi - t, t - lo), 0.0)
  room = jnp.broadcast_to(room, w.shape)
  pos = k > 0
  brk = jnp.where(pos, room / jnp.where(pos, k, 1.0), 0.0)
  h = lambda th: jnp.sum(aw * jnp.minimum(th * k, room), axis=1,
                         keepdims=True)
  top = jnp.max(brk, axis=1, keepdims=True)
  unreachable = h(top) < c
  below, above = jnp.zeros_like(top), top   # h(below) < c <= h(above)
  for _ in range(BISECTION_STEPS):
    mid = 0.5 * (below + above)
    low = h(mid) < c
    below, above = jnp.where(low, mid, below), jnp.where(low, above, mid)
  # Exact on the linear piece the bracket identifies: coordinates whose
  # breakpoint lies below it are saturated, the others move theta * k_i.
  sat = pos & (brk <= below)
  a0 = jnp.sum(jnp.where(sat, aw * room, 0.0), axis=1, keepdims=True)
  k0 = jnp.sum(jnp.where(sat, 0.0, aw * k), axis=1, keepdims=True)
  theta = _safe_div(c - a0, k0)
  step = jnp.minimum(theta * k, room)
  step = jnp.where(unreachable, room, step)
  return jnp.where(aw > 0, direction * step, 0.0)


def _flat(a: jax.Array) -> jax.Array:
  return a.reshape(a.shape[0], -1)


def _rows(mask: jax.Array, a: jax.Array) -> jax.Array:
  return mask.reshape(mask.shape + (1,) * (a.ndim - 1))


def _linear_boundary(apply_fn: ApplyFn, threat: threat_lib.Threat,
                     targeted: bool):
  """`boundary(variables, x1, y, target) -> (w [B, D], b [B])`: the
  linearised boundary FAB projects onto (see the module docstring)."""
  dual = 1 if threat.norm == 'linf' else 2

  def boundary(variables, x1, y, target):
    logits, vjp = jax.vjp(lambda z: apply_fn(variables, z), x1)
    num_classes = logits.shape[-1]
    e_y = jax.nn.one_hot(y, num_classes, dtype=logits.dtype)
    f_y = jnp.sum(logits * e_y, axis=-1)
    if targeted:
      e_t = jax.nn.one_hot(target, num_classes, dtype=logits.dtype)
      w = _flat(vjp(e_t - e_y)[0])
      f = jnp.sum(logits * e_t, axis=-1) - f_y
    else:
      cots = jnp.eye(num_classes, dtype=logits.dtype)[:, None, :] - e_y
      g = jax.vmap(lambda cot: vjp(cot)[0])(cots)          # [K, B, ...]
      g = jnp.swapaxes(g.reshape(num_classes, x1.shape[0], -1), 0, 1)
      df = logits - f_y[:, None]                            # [B, K]
      gs = g * _flat(_scale(threat, x1))[:, None, :]
      size = jnp.linalg.norm(gs, ord=dual, axis=-1)
      dist = jnp.abs(df) / (1e-12 + size)
      dist = jnp.where(jnp.arange(num_classes) == y[:, None], jnp.inf, dist)
      ind = jnp.argmin(dist, axis=1)
      w = jnp.take_along_axis(g, ind[:, None, None], axis=1)[:, 0]
      f = jnp.take_along_axis(df, ind[:, None], axis=1)[:, 0]
    return w, jnp.sum(w * _flat(x1), axis=1) - f

  return boundary


def _scale(threat: threat_lib.Threat, x: jax.Array) -> jax.Array:
  """Per-feature eps scale broadcast to one example's shape (`[1, ...]`)."""
  if threat.scale is None:
    return jnp.ones((1,) + x.shape[1:], x.dtype)
  return jnp.broadcast_to(jnp.asarray(threat.scale, x.dtype),
                          x.shape[1:])[None]


def _projector(threat: threat_lib.Threat):
  """`project(x1, x0, w, b) -> (d1, d2)`: both points' steps onto the
  hyperplane in the box, in the threat's scaled space (`u = z / s`)."""

  def project(x1, x0, w, b):
    s = _flat(_scale(threat, x1))
    t = jnp.concatenate([_flat(x1), _flat(x0)]) / s
    ws = jnp.concatenate([w, w]) * s
    bb = jnp.concatenate([b, b])
    lo = hi = None
    if threat.lo is not None:
      lo = _flat(jnp.broadcast_to(jnp.asarray(threat.lo, x1.dtype),
                                  x1.shape[1:])[None]) / s
      hi = _flat(jnp.broadcast_to(jnp.asarray(threat.hi, x1.dtype),
                                  x1.shape[1:])[None]) / s
      lo, hi = jnp.minimum(lo, t), jnp.maximum(hi, t)
    d = boundary_projection(t, ws, bb, threat.norm, lo, hi) * s
    d1, d2 = jnp.split(d.reshape((-1,) + x1.shape[1:]), 2)
    return d1, d2

  return project


def _fab_pass(apply_fn: ApplyFn, threat: threat_lib.Threat, *,
              targeted: bool, steps: int, alpha_max: float, eta: float,
              beta: float, loop: str | int | None, chunk: int | None):
  """n FAB runs side by side (`passes`): `run(variables, x0, y, targets
  [n, B], keys [n], rand [n], eps_b) -> (adv, res)` over `n * B` rows, the
  nearest adversarial iterate and its distance (inf if none); the steps
  are driven by `loops.run_loop` (start and body built once, here)."""
  boundary = _linear_boundary(apply_fn, threat, targeted)
  project = _projector(threat)

  def body(i, carry, variables, x0, y, target):
    del i
    x1, adv, res = carry
    w, b = boundary(variables, x1, y, target)
    d1, d2 = project(x1, x0, w, b)
    a = jnp.maximum(threat.size(jnp.concatenate([d1, d2])), 1e-8)
    a1, a2 = jnp.split(a, 2)
    alpha = jnp.clip(a1 / (a1 + a2), 0.0, alpha_max)
    alpha = _rows(alpha, x1).astype(x1.dtype)
    x1 = threat.clip((x1 + eta * d1) * (1 - alpha)
                     + (x0 + eta * d2) * alpha)
    is_adv = jnp.argmax(apply_fn(variables, x1), axis=-1) != y
    dist = threat.size(x1 - x0)
    better = is_adv & (dist < res)
    adv = jnp.where(_rows(better, x1), x1, adv)
    res = jnp.where(better, dist, res)
    x1 = jnp.where(_rows(is_adv, x1), x0 + (x1 - x0) * beta, x1)
    return jax.lax.stop_gradient((x1, adv, res))

  @jax.jit
  def start(x0, y, targets, keys, rand, eps_b):
    n, b = targets.shape

    def one(key, r):
      u = 0.5 * eps_b * norms.random_unit(key, x0, threat.norm)
      return jnp.where(r, threat.clip(x0 + threat.to_delta(u)), x0)

    x1 = jax.vmap(one)(keys, rand).reshape((n * b,) + x0.shape[1:])
    x0_n, y_n = passes.stack((x0, y), n)
    res = jnp.full((n * b,), jnp.inf, x0.dtype)
    return (x1, x0_n, res), (x0_n, y_n, targets.reshape(-1))

  def run(variables, x0, y, targets, keys, rand, eps_b):
    carry, stacked = start(x0, y, targets, keys, rand, eps_b)
    _, adv, res = loops.run_loop(body, carry, steps,
                                 args=(variables, *stacked), loop=loop,
                                 chunk=chunk)
    return adv, res

  return run


def _fab_run(apply_fn: ApplyFn, threat: threat_lib.Threat, *,
             targeted: bool, n_target_classes: int, restarts: int,
             loop: str | int | None, **pass_options):
  """All passes (`lax.scan`, or a Python loop over groups of passes run
  side by side, `passes.groups`, when the steps are host-driven); per
  example the first pass whose adversarial example lies within eps, else
  x. A pass that starts when every point is done is skipped."""
  one_pass = _fab_pass(apply_fn, threat, targeted=targeted, loop=loop,
                       **pass_options)

  @jax.jit
  def prepare(variables, x, y, key):
    logits = apply_fn(variables, x)
    correct = jnp.argmax(logits, axis=-1) == y
    targets = passes.pass_targets(logits, y, targeted=targeted,
                                  n_target_classes=n_target_classes,
                                  restarts=restarts)
    rand = np.tile(np.arange(restarts) > 0, targets.shape[0] // restarts)
    init = dict(x=x, done=~correct, correct=correct,
                distance=jnp.where(correct, jnp.inf, 0.0).astype(x.dtype))
    return init, (jax.random.split(key, targets.shape[0]), targets,
                  jnp.asarray(rand))

  @jax.jit
  def merge(c, adv, res, eps_b):
    """The stacked passes in pass order, as one by one (skipped once every
    point is done)."""
    b = c['x'].shape[0]
    for p in range(res.shape[0] // b):
      a, r = passes.part((adv, res), p, b)
      ok = c['correct'] & (r <= eps_b.reshape(-1))
      take = ok & ~c['done']
      new = dict(c, x=jnp.where(_rows(take, a), a, c['x']),
                 done=c['done'] | ok, distance=jnp.minimum(c['distance'], r))
      c = jax.tree.map(lambda u, v, s=jnp.all(c['done']): jnp.where(s, v, u),
                       new, c)
    return c

  def run(variables, x, y, key, eps_b):
    host = loops.host_mode(loop, variables, x, key, eps_b)
    init, (keys, targets, rand) = prepare(variables, x, y, key)
    if host:
      c = init
      for lo, hi in passes.groups(targets.shape[0], x.shape[0]):
        if bool(jnp.all(c['done'])):
          break
        c = merge(c, *one_pass(variables, x, y, targets[lo:hi],
                               keys[lo:hi], rand[lo:hi], eps_b), eps_b)
      return c['x'], {'distance': c['distance']}

    def one(c, inp):
      k, target, r = inp
      attack = lambda: one_pass(variables, x, y, target[None], k[None],
                                r[None], eps_b)
      skip = lambda _: (x, jnp.full(x.shape[:1], jnp.inf, x.dtype))
      adv, res = jax.lax.cond(jnp.all(c['done']), skip,
                              lambda _: attack(), None)
      return merge(c, adv, res, eps_b)

    c = loops.scan_or_loop(one, init, (keys, targets, rand), host=False)
    return c['x'], {'distance': c['distance']}

  return run


def _check_options(*, steps, restarts, n_target_classes, alpha_max, eta,
                   beta, targeted, loop, chunk):
  for name, v in (('steps', steps), ('restarts', restarts),
                  ('n_target_classes', n_target_classes)):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
      raise ValueError(f'{name} must be an int >= 1, got {v!r}.')
  for name, v, ok, allowed in (
      ('alpha_max', alpha_max, lambda v: 0 <= v <= 1, 'in [0, 1]'),
      ('eta', eta, lambda v: v >= 1, '>= 1 (finite)'),
      ('beta', beta, lambda v: 0 < v <= 1, 'in (0, 1]')):
    if isinstance(v, bool) or not isinstance(
        v, (int, float, np.integer, np.floating)) or not (
            math.isfinite(v) and ok(v)):
      raise ValueError(f'{name} must be a number {allowed}, got {v!r}.')
  if not isinstance(targeted, bool):
    raise ValueError(f'targeted must be a bool, got {targeted!r}.')
  loops.check_loop(loop)
  loops.check_chunk(chunk)


def make_fab(apply_fn: ApplyFn, *, norm: str = 'linf', targeted: bool = False,
             n_target_classes: int = 9, steps: int = 100, restarts: int = 1,
             alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9,
             clip: tuple[Any, Any] | None = None, eps_scale: Any = None,
             loop: str | int | None = 'auto', chunk: int | None = None,
             return_info: bool = False) -> registry.Attack:
  """Builds FAB (or FAB-T) (see the module docstring for the algorithm).

  Args:
    apply_fn: `apply_fn(variables, x [B, ...]) -> logits [B, K]`, eval mode.
    norm: 'linf' or 'l2': the norm minimised and the eps ball.
    targeted: FAB-T: one pass per target (the top `n_target_classes`
      non-top classes on the clean input); `y` stays the true labels.
    n_target_classes: FAB-T's targets (9; capped at K - 1).
    steps: iterations per pass (the authors' n_iter, 100).
    restarts: passes per target (untargeted: in all); all but the first
      start at a random point at distance eps / 2.
    alpha_max, eta, beta: the paper's step bias towards x0, overshoot and
      backward step (0.1, 1.05, 0.9).
    clip: `(lo, hi)` data range (as in `make_pgd`), part of the projection.
    eps_scale: per-feature eps scale (as in `make_pgd`); distances are in
      the scaled norm.
    loop, chunk: how the steps run (`loops.run_loop`; as in `make_pgd`):
      'auto' is host-driven jitted chunks on CPU, `fori_loop` on GPU/TPU;
      in 'host' mode the passes are a Python loop that stops once every
      point is done.
    return_info: also return the `make_pgd` info plus 'distance'.

  Returns:
    An `Attack` named 'fab' or 'fab-t': `attack(variables, x, y, key, eps)
    -> x_adv`, pure, jittable and vmappable over eps; per example the
    adversarial example found within eps, else x (eps=0 returns x).
  """
  build.check_apply_fn(apply_fn)
  _check_options(steps=steps, restarts=restarts, alpha_max=alpha_max,
                 n_target_classes=n_target_classes, eta=eta, beta=beta,
                 targeted=targeted, loop=loop, chunk=chunk)
  threat = threat_lib.Threat.build(norm, clip, eps_scale)
  run = _fab_run(apply_fn, threat, targeted=targeted,
                 n_target_classes=int(n_target_classes),
                 restarts=int(restarts), steps=int(steps),
                 alpha_max=float(alpha_max), eta=float(eta),
                 beta=float(beta), loop=loop, chunk=chunk)
  config = dict(norm=norm, targeted=targeted, steps=steps, restarts=restarts,
                alpha_max=alpha_max, eta=eta, beta=beta, clip=clip,
                eps_scale=eps_scale, loop=loop, chunk=chunk)
  if targeted:
    config['n_target_classes'] = n_target_classes
  return build.build_attack('fab-t' if targeted else 'fab', config, apply_fn,
                            run, threat=threat, return_info=return_info,
                            extra_info=True, loop=loop)


def make_fab_t(apply_fn: ApplyFn, *, norm: str = 'linf',
               n_target_classes: int = 9, steps: int = 100,
               restarts: int = 1, alpha_max: float = 0.1, eta: float = 1.05,
               beta: float = 0.9, clip=None, eps_scale=None,
               loop: str | int | None = 'auto', chunk: int | None = None,
               return_info: bool = False) -> registry.Attack:
  """FAB-T, AutoAttack's targeted FAB ('fab-t'); see `make_fab`."""
  return make_fab(apply_fn, norm=norm, targeted=True,
                  n_target_classes=n_target_classes, steps=steps,
                  restarts=restarts, alpha_max=alpha_max, eta=eta, beta=beta,
                  clip=clip, eps_scale=eps_scale, loop=loop, chunk=chunk,
                  return_info=return_info)


registry.register_attack('fab', make_fab)
registry.register_attack('fab-t', make_fab_t)
