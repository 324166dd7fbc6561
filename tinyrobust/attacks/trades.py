"""TRADES' inner maximisation (Zhang et al. 2019) as a pure kernel.

`make_trades_attack(apply_fn, threat, steps=, rel_step_size=)` returns
`attack(variables, x, key, eps) -> x_adv`, where x_adv maximises
KL(p(x) || p(x_adv)) (p the softmax of `apply_fn`, in eval mode) inside the
threat's (scaled) ball and clip range. Unlike the label attacks of this
package it takes no labels, so it is not in the attack registry; adversarial
training (`tinyrobust.adversarial`) uses it for method 'trades'.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from tinyrobust.attacks import loops
from tinyrobust.attacks import threat as threat_lib

# The start: x + N(0, (TRADES_START * eps)^2) (scaled by the threat's
# eps_scale), the reference's 0.001 at eps = 0.031.
TRADES_START = 0.001 / 0.031


def make_trades_attack(apply_fn: Callable, threat: threat_lib.Threat, *,
                       steps: int, rel_step_size: float,
                       loop: str | int = 'fori'):
  """TRADES' inner maximisation: `attack(variables, x, key, eps) -> x_adv`.

  x_adv maximises sum_i KL(p(x_i) || p(x_adv_i)) (p = softmax of
  `apply_fn`, p(x) held fixed) by `steps` steepest-ascent steps of
  `rel_step_size * eps` in the threat's (scaled) norm from
  `x + N(0, (TRADES_START * eps)^2)`, each projected onto the ball and the
  clip range; eps a scalar (eps = 0 returns x). Pure and jittable.
  """

  def kl_sum(x_adv, variables, p_clean):
    logp = jax.nn.log_softmax(apply_fn(variables, x_adv))
    return jnp.sum(p_clean * (jnp.log(jnp.maximum(p_clean, 1e-30)) - logp))

  grad = jax.grad(kl_sum)

  def body(i, x_adv, variables, x, p_clean, eps_b, alpha):
    del i
    g = grad(x_adv, variables, p_clean)
    return jax.lax.stop_gradient(
        threat.project(x, x_adv + alpha * threat.direction(g), eps_b))

  def attack(variables, x, key, eps):
    eps_b = jnp.broadcast_to(jnp.asarray(eps, x.dtype),
                             (x.shape[0],) + (1,) * (x.ndim - 1))
    p_clean = jax.lax.stop_gradient(jax.nn.softmax(apply_fn(variables, x)))
    noise = threat.to_delta(jax.random.normal(key, x.shape, x.dtype))
    x0 = threat.project(x, x + TRADES_START * eps_b * noise, eps_b)
    x_adv = loops.run_loop(body, jax.lax.stop_gradient(x0), steps,
                           args=(variables, x, p_clean, eps_b,
                                 rel_step_size * eps_b), loop=loop)
    return jnp.where(eps_b > 0, x_adv, x)

  return attack
