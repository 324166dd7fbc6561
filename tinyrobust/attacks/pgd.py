"""FGSM and PGD kernel factories (L-inf and L2, targeted or not, restarts).

`make_pgd(apply_fn, **static)` binds the static choices and returns a pure
`attack(variables, x, y, key, eps) -> x_adv`. Each step takes one gradient of
the summed per-example loss w.r.t. `x` (examples are independent in eval mode,
so this is every example's own gradient), moves along the norm's steepest
ascent direction, projects onto the eps-ball around `x`, clips to the data
range and stops gradients. FGSM is PGD with one step of size eps and no random
start.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from tinyrobust.attacks import checks
from tinyrobust.attacks import losses
from tinyrobust.attacks import norms

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


def make_pgd(apply_fn: ApplyFn, *, norm: str = 'linf', steps: int = 10,
             step_size: float | None = None,
             rel_step_size: float | None = None, random_start: bool = True,
             loss: str = 'ce', targeted: bool = False,
             clip: tuple[float, float] | None = None, restarts: int = 1,
             loop: str | int | None = None, return_info: bool = False):
  """Builds a projected-gradient-descent attack kernel.

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
    clip: `(lo, hi)` valid input range in input units, or None.
    restarts: independent random starts (vmapped over split keys); the
      strongest result per example (largest attacker margin) is kept.
    loop: 'fori', 'scan', 'unroll' or an int unroll factor for `fori_loop`;
      None picks `default_loop()` for the backend at trace time.
    return_info: also return per-example diagnostics (see below).

  Returns:
    `attack(variables, x, y, key, eps)`: `x [B, ...]` float inputs, `y [B]`
    int labels (targets if targeted), `key` a PRNG key, `eps` a scalar or
    `[B]` radius in input units (eps=0 returns `x` exactly). Returns
    `x_adv [B, ...]`, or `(x_adv, info)` with `info` holding `[B]` arrays:
    'success' (prediction != y, or == y if targeted), 'margin'
    (`z_y - max_{j != y} z_j` at x_adv), 'prediction', and the perturbation
    norms 'linf' and 'l2'. The kernel is pure and traceable: vmap it over eps
    (`in_axes=(None, None, None, None, 0)`) for a sweep in one compiled call.
    With concrete inputs it validates them (`checks.check_inputs`) and runs a
    cached `jax.jit` of itself; under tracing only shape checks run.

  Raises:
    ValueError: a bad static option here; bad inputs when the kernel is called.
  """
  if not callable(apply_fn):
    raise ValueError(f'apply_fn must be callable, got {apply_fn!r}.')
  checks.check_static_options(
      norm=norm, loss=loss, steps=steps, step_size=step_size,
      rel_step_size=rel_step_size, random_start=random_start,
      targeted=targeted, clip=clip, restarts=restarts, loop=loop)
  steps, restarts = int(steps), int(restarts)
  loss_fn = losses.get_loss(loss)
  sign = -1.0 if targeted else 1.0
  if step_size is None and rel_step_size is None:
    rel_step_size = 2.5 / steps

  def objective(x, variables, y):
    return sign * jnp.sum(loss_fn(apply_fn(variables, x), y))

  grad_x = jax.grad(objective)

  def attacker_score(logits, y):
    m = losses.label_margin(logits, y)
    return m if targeted else -m

  def one_run(variables, x, y, key, eps_b):
    if rel_step_size is not None:
      alpha = jnp.asarray(rel_step_size, x.dtype) * eps_b
    else:
      alpha = jnp.asarray(step_size, x.dtype)

    def finish(x_new):
      x_new = x + norms.project(x_new - x, eps_b, norm)
      if clip is not None:
        x_new = jnp.clip(x_new, clip[0], clip[1])
      return jax.lax.stop_gradient(x_new)

    def step(x_adv):
      g = grad_x(x_adv, variables, y)
      return finish(x_adv + alpha * norms.ascent_direction(g, norm))

    x_adv = x
    if random_start:
      x_adv = finish(x + norms.random_init(key, x, eps_b, norm))
    return _run_steps(step, x_adv, steps, loop or default_loop())

  def kernel(variables, x, y, key, eps):
    eps_b = norms.broadcast_eps(eps, x)
    if restarts == 1:
      x_adv = one_run(variables, x, y, key, eps_b)
    else:
      keys = jax.random.split(key, restarts)
      cands = jax.vmap(one_run, (None, None, None, 0, None))(
          variables, x, y, keys, eps_b)                       # [R, B, ...]
      cand_logits = jax.vmap(apply_fn, (None, 0))(variables, cands)
      best = jnp.argmax(jax.vmap(attacker_score, (0, None))(cand_logits, y),
                        axis=0)                                # [B]
      batch = jnp.arange(x.shape[0])
      x_adv = cands[best, batch]
    # Exact identity for eps == 0 even when x lies outside `clip`.
    x_adv = jnp.where(eps_b > 0, x_adv, x)
    if not return_info:
      return x_adv
    # The barrier keeps XLA:CPU from fusing this forward pass into the last
    # gradient step, which measured ~1.4x slower than running it after.
    logits = apply_fn(variables, jax.lax.optimization_barrier(x_adv))
    pred = jnp.argmax(logits, axis=-1).astype(y.dtype)
    d = x_adv - x
    info = {
        'success': pred == y if targeted else pred != y,
        'margin': losses.label_margin(logits, y),
        'prediction': pred,
        'linf': norms.per_example_norm(d, 'linf'),
        'l2': norms.per_example_norm(d, 'l2'),
    }
    return x_adv, info

  jitted = jax.jit(kernel)
  class_cache: dict[Any, int] = {}

  def num_classes(variables, x) -> int:
    leaves, treedef = jax.tree.flatten(variables)
    sig = (treedef, tuple((jnp.shape(v), jnp.result_type(v)) for v in leaves),
           jnp.shape(x)[1:], jnp.result_type(x))
    if sig not in class_cache:
      out = jax.eval_shape(apply_fn, variables,
                           jax.ShapeDtypeStruct(jnp.shape(x),
                                                jnp.result_type(x)))
      class_cache[sig] = int(out.shape[-1])
    return class_cache[sig]

  def attack(variables, x, y, key, eps):
    """`x_adv = attack(variables, x [B, ...], y [B], key, eps [] or [B])`.

    See `make_pgd` for the arguments and the optional `(x_adv, info)` output.
    """
    checks.check_shapes(x, y, eps)
    if checks.is_traced(x, y, eps):
      return kernel(variables, x, y, key, eps)
    checks.check_inputs(x, y, eps, num_classes=num_classes(variables, x))
    return jitted(variables, x, y, key, eps)

  attack.kind = 'fgsm' if (steps == 1 and not random_start
                           and rel_step_size == 1.0) else 'pgd'
  attack.config = dict(norm=norm, steps=steps, step_size=step_size,
                       rel_step_size=rel_step_size, random_start=random_start,
                       loss=loss, targeted=targeted, clip=clip,
                       restarts=restarts, loop=loop)
  return attack


def make_fgsm(apply_fn: ApplyFn, *, norm: str = 'linf', loss: str = 'ce',
              targeted: bool = False,
              clip: tuple[float, float] | None = None,
              return_info: bool = False):
  """Fast gradient (sign) method: one step of size eps from `x`.

  `x_adv = clip(x + eps * sign(grad_x J))` for 'linf'; for 'l2' the step is
  `eps * g / ||g||_2` per example. Identical to `make_pgd(..., steps=1,
  rel_step_size=1.0, random_start=False)`; arguments and the returned
  kernel are as in `make_pgd`.
  """
  return make_pgd(apply_fn, norm=norm, steps=1, rel_step_size=1.0,
                  random_start=False, loss=loss, targeted=targeted, clip=clip,
                  return_info=return_info)
