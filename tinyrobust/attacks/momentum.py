"""MI-FGSM: the momentum iterative fast gradient sign method (L-inf and L2).

Dong et al., "Boosting Adversarial Attacks with Momentum", CVPR 2018. Plain
PGD overfits the source model's local loss surface and transfers poorly;
accumulating an L1-normalised gradient with decay `mu` stabilises the update
direction and makes examples crafted on one model fool others more often:

    g_0 = 0
    g_{t+1} = mu * g_t + grad_x J(x_t, y) / ||grad_x J(x_t, y)||_1
    x_{t+1} = clip(Proj_eps(x_t + alpha * direction(g_{t+1})))

with `direction` = sign (L-inf) or `g / ||g||_2` (L2), the norm per example,
`alpha = eps / steps` by default (the paper's choice) and no random start.
With `steps=1` the update is exactly FGSM's. `make_mifgsm` builds the kernel
in the house pattern of `make_pgd` (see `tinyrobust.attacks.build`): a pure,
jittable `attack(variables, x, y, key, eps) -> x_adv`, vmappable over eps,
eps a scalar or `[B]`; `key` is unused (the method is deterministic).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from tinyrobust.attacks import build
from tinyrobust.attacks import checks
from tinyrobust.attacks import loops
from tinyrobust.attacks import pgd
from tinyrobust.attacks import registry
from tinyrobust.attacks import threat as threat_lib

ApplyFn = Callable[[Any, jax.Array], jax.Array]


def l1_normalise(g: jax.Array) -> jax.Array:
  """`g / ||g||_1` per example of `g [B, ...]`; a zero gradient stays zero."""
  axes = tuple(range(1, g.ndim))
  n = jnp.sum(jnp.abs(g), axis=axes, keepdims=True)
  return g / jnp.where(n > 0, n, 1.0)


def _mifgsm_run(apply_fn: ApplyFn, threat: threat_lib.Threat, *, loss: str,
                targeted: bool, steps: int, step_size: float | None,
                rel_step_size: float | None, decay: float,
                loop: str | int | None, chunk: int | None):
  """One MI-FGSM run: `run(variables, x, y, key, eps_b) -> x_adv`, its steps
  driven by `loops.run_loop` (body and start built once, here)."""
  grad = pgd.input_gradient(apply_fn, loss, targeted=targeted)

  def body(i, carry, variables, x, y, eps_b, alpha):
    del i
    x_adv, g = carry
    g = decay * g + l1_normalise(grad(variables, x_adv, y))
    x_new = x_adv + alpha * threat.direction(g)
    return jax.lax.stop_gradient(threat.project(x, x_new, eps_b)), g

  @jax.jit
  def start(x, eps_b):
    if rel_step_size is not None:
      alpha = jnp.asarray(rel_step_size, x.dtype) * eps_b
    else:
      alpha = jnp.broadcast_to(jnp.asarray(step_size, x.dtype), eps_b.shape)
    return (x, jnp.zeros_like(x)), alpha

  def run(variables, x, y, key, eps_b):
    del key  # deterministic: no random start
    carry, alpha = start(x, eps_b)
    return loops.run_loop(body, carry, steps,
                          args=(variables, x, y, eps_b, alpha), loop=loop,
                          chunk=chunk)[0]

  return run


def _check_decay(decay: Any) -> float:
  if isinstance(decay, bool) or not isinstance(decay, (int, float)) or \
      not math.isfinite(decay) or decay < 0:
    raise ValueError(f'decay (the momentum mu) must be a finite number >= 0, '
                     f'got {decay!r}.')
  return float(decay)


def make_mifgsm(apply_fn: ApplyFn, *, norm: str = 'linf', steps: int = 10,
                step_size: float | None = None,
                rel_step_size: float | None = None, decay: float = 1.0,
                loss: str = 'ce', targeted: bool = False,
                clip: tuple[Any, Any] | None = None, eps_scale: Any = None,
                loop: str | int | None = 'auto', chunk: int | None = None,
                return_info: bool = False) -> registry.Attack:
  """Builds a momentum iterative FGSM attack (Dong et al., CVPR 2018).

  Args:
    apply_fn: `apply_fn(variables, x [B, ...]) -> logits [B, K]` in eval mode,
      examples independent (as for `make_pgd`).
    norm: 'linf' (sign of the momentum) or 'l2' (momentum normalised per
      example), in the `eps_scale`d space like `make_pgd`.
    steps: iterations T >= 1.
    step_size: absolute step in input units. At most one of `step_size` and
      `rel_step_size`; when both are None the step is `eps / steps` (the
      paper's alpha = eps / T, so T sign steps just reach the L-inf radius).
    rel_step_size: step as a multiple of each example's eps.
    decay: momentum decay mu >= 0 (the paper's default 1.0; 0 is I-FGSM with
      L1-normalised gradients, i.e. PGD without random start).
    loss: 'ce', 'mse', 'margin' or 'dlr' (`tinyrobust.attacks.LOSSES`).
    targeted: `y` holds target labels and the loss is descended.
    clip: `(lo, hi)` valid input range (see `make_pgd`), or None.
    eps_scale: per-feature eps scales (see `tinyrobust.attacks.threat`).
    loop: how the steps run (`tinyrobust.attacks.loops.run_loop`): 'auto'
      (or None: 'host' on CPU, 'fori' on GPU/TPU), 'host', 'fori', 'scan',
      'unroll' or an int `fori_loop` unroll factor; under an outer jit/vmap
      'host' runs as 'fori'.
    chunk: steps per jitted call in 'host' mode (None: the default).
    return_info: also return the per-example diagnostics of `make_pgd`.

  Returns:
    An `Attack` named 'mi-fgsm', called as `attack(variables, x [B, ...],
    y [B], key, eps)` with eps a scalar or `[B]` (input units; a per-example
    radius such as `tinyrobust.attacks.snr.eps_from_snr_db` goes here
    directly); `key` is ignored. Returns `x_adv [B, ...]` (or `(x_adv,
    info)`); eps=0 returns `x` exactly.

  Raises:
    ValueError: a bad option (named, with the allowed values).
  """
  build.check_apply_fn(apply_fn)
  checks.check_static_options(
      norm=norm, loss=loss, steps=steps, step_size=step_size,
      rel_step_size=rel_step_size, random_start=False, targeted=targeted,
      clip=clip, restarts=1, loop=loop)
  loops.check_chunk(chunk)
  decay = _check_decay(decay)
  threat = threat_lib.Threat.build(norm, clip, eps_scale)
  steps = int(steps)
  if step_size is None and rel_step_size is None:
    rel_step_size = 1.0 / steps
  run = _mifgsm_run(apply_fn, threat, loss=loss, targeted=targeted,
                    steps=steps, step_size=step_size,
                    rel_step_size=rel_step_size, decay=decay, loop=loop,
                    chunk=chunk)
  config = dict(norm=norm, steps=steps, step_size=step_size,
                rel_step_size=rel_step_size, decay=decay, loss=loss,
                targeted=targeted, clip=clip, eps_scale=eps_scale, loop=loop,
                chunk=chunk)
  return build.build_attack('mi-fgsm', config, apply_fn, run, threat=threat,
                            targeted=targeted, return_info=return_info,
                            loop=loop)


registry.register_attack('mi-fgsm', make_mifgsm)
