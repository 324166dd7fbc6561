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
from tinyrobust.attacks import loops
from tinyrobust.attacks import losses
from tinyrobust.attacks import registry
from tinyrobust.attacks import threat as threat_lib

ApplyFn = Callable[[Any, jax.Array], jax.Array]

# The step-loop default per backend lives in `loops` (re-exported here).
DEFAULT_LOOP = loops.DEFAULT_LOOP
default_loop = loops.default_loop


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
             loop: str | int | None, chunk: int | None):
  """One PGD run: `run(variables, x, y, key, eps_b) -> x_adv`, its steps
  driven by `loops.run_loop` (start and step are built once, here)."""
  grad = input_gradient(apply_fn, loss, targeted=targeted)

  def finish(x, x_new, eps_b):
    return jax.lax.stop_gradient(threat.project(x, x_new, eps_b))

  def body(i, x_adv, variables, x, y, eps_b, alpha):
    del i
    g = grad(variables, x_adv, y)
    return finish(x, x_adv + alpha * threat.direction(g), eps_b)

  @jax.jit
  def start(x, key, eps_b):
    if rel_step_size is not None:
      alpha = jnp.asarray(rel_step_size, x.dtype) * eps_b
    else:
      alpha = jnp.broadcast_to(jnp.asarray(step_size, x.dtype), eps_b.shape)
    x_adv = x
    if random_start:
      x_adv = finish(x, x + threat.random_init(key, x, eps_b), eps_b)
    return x_adv, alpha

  def run(variables, x, y, key, eps_b):
    x_adv, alpha = start(x, key, eps_b)
    return loops.run_loop(body, x_adv, steps,
                          args=(variables, x, y, eps_b, alpha), loop=loop,
                          chunk=chunk)

  return run


def attacker_score(logits: jax.Array, y: jax.Array, *,
                   targeted: bool) -> jax.Array:
  """`[B]`, larger = stronger attack: minus the label margin (untargeted) or
  the target's margin (targeted)."""
  m = losses.label_margin(logits, y)
  return m if targeted else -m


def best_of_restarts(apply_fn: ApplyFn, run, restarts: int, *,
                     targeted: bool, loop: str | int | None = None):
  """`run` repeated over `restarts` split keys; per example the result with
  the largest `attacker_score` is kept. The restarts are vmapped, or a
  Python loop when the steps are host-driven (`loops.host_mode`)."""
  if restarts == 1:
    return run

  @jax.jit
  def best(variables, y, cands):                              # [R, B, ...]
    cand_logits = jax.vmap(apply_fn, (None, 0))(variables, cands)
    score = jax.vmap(lambda z: attacker_score(z, y, targeted=targeted))(
        cand_logits)                                          # [R, B]
    pick = jnp.argmax(score, axis=0)
    return cands[pick, jnp.arange(y.shape[0])]

  def many(variables, x, y, key, eps_b):
    keys = jax.random.split(key, restarts)
    if loops.host_mode(loop, variables, x, key, eps_b):
      cands = jnp.stack([run(variables, x, y, keys[r], eps_b)
                         for r in range(restarts)])
    else:
      cands = jax.vmap(run, (None, None, None, 0, None))(
          variables, x, y, keys, eps_b)
    return best(variables, y, cands)

  return many


def make_pgd(apply_fn: ApplyFn, *, norm: str = 'linf', steps: int = 10,
             step_size: float | None = None,
             rel_step_size: float | None = None, random_start: bool = True,
             loss: str = 'ce', targeted: bool = False,
             clip: tuple[Any, Any] | None = None, eps_scale: Any = None,
             restarts: int = 1, loop: str | int | None = 'auto',
             chunk: int | None = None,
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
    loop: how the steps run (`loops.run_loop`): 'auto' (or None) is
      `default_loop()`, 'host' on CPU (a Python loop over a jitted chunk of
      steps, falling back to 'fori' under an outer jit/vmap), 'fori' on
      GPU/TPU; or 'fori', 'scan', 'unroll', an int `fori_loop` unroll
      factor. Every mode gives the same output for the same key.
    chunk: steps per jitted call in 'host' mode (None:
      `loops.DEFAULT_CHUNK`).
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
  loops.check_chunk(chunk)
  threat = threat_lib.Threat.build(norm, clip, eps_scale)
  steps, restarts = int(steps), int(restarts)
  if step_size is None and rel_step_size is None:
    rel_step_size = 2.5 / steps
  run = _pgd_run(apply_fn, threat, loss=loss, targeted=targeted, steps=steps,
                 step_size=step_size, rel_step_size=rel_step_size,
                 random_start=random_start, loop=loop, chunk=chunk)
  run = best_of_restarts(apply_fn, run, restarts, targeted=targeted,
                         loop=loop)
  name = 'fgsm' if (steps == 1 and not random_start
                    and rel_step_size == 1.0) else 'pgd'
  config = dict(norm=norm, steps=steps, step_size=step_size,
                rel_step_size=rel_step_size, random_start=random_start,
                loss=loss, targeted=targeted, clip=clip, eps_scale=eps_scale,
                restarts=restarts, loop=loop, chunk=chunk)
  return build.build_attack(name, config, apply_fn, run, threat=threat,
                            targeted=targeted, return_info=return_info,
                            loop=loop)


def make_fgsm(apply_fn: ApplyFn, *, norm: str = 'linf', loss: str = 'ce',
              targeted: bool = False, clip: tuple[Any, Any] | None = None,
              eps_scale: Any = None, loop: str | int | None = 'auto',
              return_info: bool = False) -> registry.Attack:
  """Fast gradient (sign) method: one step of size eps from `x`.

  `x_adv = clip(x + eps * sign(grad_x J))` for 'linf'; for 'l2' the step is
  `eps * g / ||g||_2` per example. Identical to `make_pgd(..., steps=1,
  rel_step_size=1.0, random_start=False)`; arguments and the returned
  attack are as in `make_pgd` (its name is 'fgsm'; with one step every
  `loop` mode is the same single jitted call).
  """
  return make_pgd(apply_fn, norm=norm, steps=1, rel_step_size=1.0,
                  random_start=False, loss=loss, targeted=targeted, clip=clip,
                  eps_scale=eps_scale, loop=loop, return_info=return_info)


registry.register_attack('fgsm', make_fgsm)
registry.register_attack('pgd', make_pgd)
