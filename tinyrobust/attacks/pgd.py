"""FGSM and PGD kernel factories (L-inf and L2, targeted or not, restarts).

`make_pgd(apply_fn, **static)` binds the static choices and returns an
`Attack` record, called as `attack(variables, x, y, key, eps) -> x_adv`. Each
step takes one gradient of the summed per-example loss w.r.t. `x` (examples
are independent in eval mode, so this is every example's own gradient),
moves along the norm's steepest ascent direction, projects onto the eps-ball
around `x`, clips to the data range and stops gradients. FGSM is PGD with one
step of size eps and no random start.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from tinyrobust.attacks import build
from tinyrobust.attacks import checks
from tinyrobust.attacks import losses
from tinyrobust.attacks import registry
from tinyrobust.attacks import threat as threat_lib

ApplyFn = Callable[[Any, jax.Array], jax.Array]

# Step-loop default per backend, chosen with experiments/bench_attacks.py.
# On XLA:CPU (2 cores, batch 256) PGD-10 took 7.8x (ResNet-style CNN, 32x32x3)
# and 2.8x (1-D CNN, IMU windows) the time of 10 jitted input-gradient steps
# with a rolled `fori_loop` ('scan' alike), but 1.08x and 0.91x unrolled; the
# price is compile time growing with `steps` (ResNet PGD-10: ~50 s unrolled
# vs ~160 s rolled on the loaded machine, so rolling does not even save
# compile time there). GPU/TPU were not measured: a rolled `fori_loop` keeps
# compile time flat in `steps` and is the default there; pass `loop=` to
# override (e.g. an architecture search compiling many models may prefer
# 'fori').
DEFAULT_LOOP = {'cpu': 'unroll', 'gpu': 'fori', 'cuda': 'fori',
                'rocm': 'fori', 'tpu': 'fori'}


def default_loop(backend: str | None = None) -> str:
  """The step-loop mode used when `loop=None` on `backend` (default: current)."""
  backend = jax.default_backend() if backend is None else backend
  return DEFAULT_LOOP.get(backend, 'fori')


def _run_steps(step: Callable[[jax.Array], jax.Array], x0: jax.Array,
               steps: int, loop: str | int) -> jax.Array:
  if loop == 'unroll':
    x = x0
    for _ in range(steps):
      x = step(x)
    return x
  if loop == 'scan':
    return jax.lax.scan(lambda c, _: (step(c), None), x0, None,
                        length=steps)[0]
  unroll = 1 if loop == 'fori' else int(loop)
  return jax.lax.fori_loop(0, steps, lambda _, c: step(c), x0,
                           unroll=min(unroll, steps))


def input_gradient(apply_fn: ApplyFn, loss: str, *, targeted: bool):
  """`grad(variables, x, y)`: gradient of the attacker's summed loss w.r.t. x
  (the loss of `y`, negated when `targeted`)."""
  loss_fn = losses.get_loss(loss)
  sign = -1.0 if targeted else 1.0

  def objective(x, variables, y):
    return sign * jnp.sum(loss_fn(apply_fn(variables, x), y))

  grad_x = jax.grad(objective)
  return lambda variables, x, y: grad_x(x, variables, y)


def _pgd_run(apply_fn: ApplyFn, threat: threat_lib.Threat, *, loss: str,
             targeted: bool, steps: int, step_size: float | None,
             rel_step_size: float | None, random_start: bool,
             loop: str | int | None):
  """One PGD run: `run(variables, x, y, key, eps_b) -> x_adv`."""
  grad = input_gradient(apply_fn, loss, targeted=targeted)

  def run(variables, x, y, key, eps_b):
    if rel_step_size is not None:
      alpha = jnp.asarray(rel_step_size, x.dtype) * eps_b
    else:
      alpha = jnp.asarray(step_size, x.dtype)

    def finish(x_new):
      return jax.lax.stop_gradient(threat.project(x, x_new, eps_b))

    def step(x_adv):
      g = grad(variables, x_adv, y)
      return finish(x_adv + alpha * threat.direction(g))

    x_adv = x
    if random_start:
      x_adv = finish(x + threat.random_init(key, x, eps_b))
    return _run_steps(step, x_adv, steps, loop or default_loop())

  return run


def attacker_score(logits: jax.Array, y: jax.Array, *,
                   targeted: bool) -> jax.Array:
  """`[B]`, larger = stronger attack: minus the label margin (untargeted) or
  the target's margin (targeted)."""
  m = losses.label_margin(logits, y)
  return m if targeted else -m


def best_of_restarts(apply_fn: ApplyFn, run, restarts: int, *,
                     targeted: bool):
  """`run` repeated over `restarts` split keys (vmapped); per example the
  result with the largest `attacker_score` is kept."""
  if restarts == 1:
    return run

  def many(variables, x, y, key, eps_b):
    keys = jax.random.split(key, restarts)
    cands = jax.vmap(run, (None, None, None, 0, None))(
        variables, x, y, keys, eps_b)                       # [R, B, ...]
    cand_logits = jax.vmap(apply_fn, (None, 0))(variables, cands)
    score = jax.vmap(lambda z: attacker_score(z, y, targeted=targeted))(
        cand_logits)                                          # [R, B]
    best = jnp.argmax(score, axis=0)
    return cands[best, jnp.arange(x.shape[0])]

  return many


def make_pgd(apply_fn: ApplyFn, *, norm: str = 'linf', steps: int = 10,
             step_size: float | None = None,
             rel_step_size: float | None = None, random_start: bool = True,
             loss: str = 'ce', targeted: bool = False,
             clip: tuple[Any, Any] | None = None, eps_scale: Any = None,
             restarts: int = 1, loop: str | int | None = None,
             return_info: bool = False) -> registry.Attack:
  """Builds a projected-gradient-descent attack.

  Args:
    apply_fn: `apply_fn(variables, x [B, ...]) -> logits [B, K]`, in eval mode
      (e.g. `functools.partial(module.apply, train=False)` or plain JAX). It
      must treat examples independently (no batch statistics).
    norm: 'linf' (sign steps, box projection) or 'l2' (per-example normalised
      gradient steps, ball projection).
    steps: number of gradient steps, >= 1.
    step_size: absolute step size in input units. At most one of `step_size`
      and `rel_step_size`; when both are None the step is `2.5 * eps / steps`
      (Madry et al.), so an eps sweep keeps the same schedule per eps.
    rel_step_size: step size as a multiple of each example's eps.
    random_start: start from a uniform sample of the eps-ball (else from x).
    loss: 'ce' (cross-entropy on logits), 'mse' (softmax vs one-hot, the
      study's loss) or 'margin' (CW margin `max_{j != y} z_j - z_y`).
    targeted: if True, `y` holds target labels and the loss is descended.
    clip: `(lo, hi)` valid input range in input units, or None; `lo`, `hi`
      scalars or arrays broadcastable to one example's shape (per channel:
      shape `[C]` for channels-last data), finite, lo <= hi elementwise.
    eps_scale: None (1) or positive finite scales broadcastable to one
      example's shape: the L-inf ball is `|delta_i| <= eps * eps_scale_i`,
      the L2 ball `||delta / eps_scale||_2 <= eps` (random start, steps and
      projection in that scaled space; see `tinyrobust.attacks.threat`).
      Step sizes are in the scaled space too.
    restarts: independent random starts (vmapped over split keys); the
      strongest result per example (largest attacker margin) is kept.
    loop: 'fori', 'scan', 'unroll' or an int unroll factor for `fori_loop`;
      None picks `default_loop()` for the backend at trace time.
    return_info: also return per-example diagnostics (see below).

  Returns:
    An `Attack` named 'pgd' (or 'fgsm' when built by `make_fgsm`), called as
    `attack(variables, x, y, key, eps)`: `x [B, ...]` float inputs, `y [B]`
    int labels (targets if targeted), `key` a PRNG key, `eps` a scalar or
    `[B]` radius in input units (eps=0 returns `x` exactly). Returns
    `x_adv [B, ...]`, or `(x_adv, info)` with `info` holding `[B]` arrays:
    'success' (prediction != y, or == y if targeted), 'margin'
    (`z_y - max_{j != y} z_j` at x_adv), 'prediction', the perturbation
    norms 'linf' and 'l2' (input units) and 'valid' (eps and label valid;
    see "Traced inputs" in `tinyrobust.attacks`). The kernel is pure and traceable: vmap it over eps
    (`in_axes=(None, None, None, None, 0)`) for a sweep in one compiled call.
    With concrete inputs it validates them (`checks.check_inputs`) and runs a
    cached `jax.jit` of itself; under tracing only shape checks run.

  Raises:
    ValueError: a bad static option here; bad inputs when the kernel is called.
  """
  build.check_apply_fn(apply_fn)
  checks.check_static_options(
      norm=norm, loss=loss, steps=steps, step_size=step_size,
      rel_step_size=rel_step_size, random_start=random_start,
      targeted=targeted, clip=clip, restarts=restarts, loop=loop)
  threat = threat_lib.Threat.build(norm, clip, eps_scale)
  steps, restarts = int(steps), int(restarts)
  if step_size is None and rel_step_size is None:
    rel_step_size = 2.5 / steps
  run = _pgd_run(apply_fn, threat, loss=loss, targeted=targeted, steps=steps,
                 step_size=step_size, rel_step_size=rel_step_size,
                 random_start=random_start, loop=loop)
  run = best_of_restarts(apply_fn, run, restarts, targeted=targeted)
  name = 'fgsm' if (steps == 1 and not random_start
                    and rel_step_size == 1.0) else 'pgd'
  config = dict(norm=norm, steps=steps, step_size=step_size,
                rel_step_size=rel_step_size, random_start=random_start,
                loss=loss, targeted=targeted, clip=clip, eps_scale=eps_scale,
                restarts=restarts, loop=loop)
  return build.build_attack(name, config, apply_fn, run, threat=threat,
                            targeted=targeted, return_info=return_info)


def make_fgsm(apply_fn: ApplyFn, *, norm: str = 'linf', loss: str = 'ce',
              targeted: bool = False, clip: tuple[Any, Any] | None = None,
              eps_scale: Any = None,
              return_info: bool = False) -> registry.Attack:
  """Fast gradient (sign) method: one step of size eps from `x`.

  `x_adv = clip(x + eps * sign(grad_x J))` for 'linf'; for 'l2' the step is
  `eps * g / ||g||_2` per example. Identical to `make_pgd(..., steps=1,
  rel_step_size=1.0, random_start=False)`; arguments and the returned
  attack are as in `make_pgd` (its name is 'fgsm').
  """
  return make_pgd(apply_fn, norm=norm, steps=1, rel_step_size=1.0,
                  random_start=False, loss=loss, targeted=targeted, clip=clip,
                  eps_scale=eps_scale, return_info=return_info)


registry.register_attack('fgsm', make_fgsm)
registry.register_attack('pgd', make_pgd)
