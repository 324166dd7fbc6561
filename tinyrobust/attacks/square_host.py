"""Square attack against a host scoring function (`make_square(host=True)`).

`apply_fn(variables, x_np) -> logits_np` runs outside JAX (e.g. an int8
LiteRT interpreter) in a Python loop, only on the still-robust examples; the
proposals and updates are the jitted JAX of `tinyrobust.attacks.square`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tinyrobust.attacks import build
from tinyrobust.attacks import checks
from tinyrobust.attacks import losses
from tinyrobust.attacks import norms

# The proposals and updates are square.py's own private helpers, passed in
# as `ops` (the `square` module) so that this module does not import square
# (square imports this one: no cycle).
# pylint: disable=protected-access


class HostSquare:
  """Square against a host scoring function `apply_fn(variables, x_np) ->
  logits_np`; proposals and updates are jitted JAX, the scores are not."""

  def __init__(self, apply_fn, threat, *, queries, p_init, loss_fn,
               return_info, ops, corners='all'):
    square = self._ops = ops
    self.apply_fn, self.threat, self.loss_fn = apply_fn, threat, loss_fn
    self.queries, self.p_init, self.return_info = queries, p_init, return_info
    self.corners = corners
    self._jitted: dict[Any, Any] = {}
    self._update = jax.jit(
        lambda st, xn, z, y: square._update(st, xn, z, y, loss_fn))
    self._start = jax.jit(
        lambda x0, z, y: square._start_state(x0, z, y, loss_fn))

  def _fn(self, geo, shape, what):
    key = (shape, what)
    if key not in self._jitted:
      self._jitted[key] = jax.jit(geo.init if what == 'init' else
                                  geo.proposal(what))
    return self._jitted[key]

  def _score(self, variables, x_np, b_expected):
    z = np.asarray(self.apply_fn(variables, x_np), np.float32)
    if z.ndim != 2 or z.shape[0] != b_expected:
      raise ValueError(f'The host scoring function must return logits of '
                       f'shape [{b_expected}, K], got {z.shape}.')
    return z

  def __call__(self, variables, x, y, key, eps):
    """`attack(variables, x, y, key, eps)` on concrete arrays (not jittable)."""
    checks.check_shapes(x, y, eps)
    if checks.is_traced(x, y, eps):
      raise ValueError('Square with host=True scores on the host: call it '
                       'with concrete arrays, outside jit/vmap.')
    self.threat.check_example_shape(tuple(np.shape(x)[1:]))
    checks.check_inputs(x, y, eps)
    x, y = jnp.asarray(x), jnp.asarray(y)
    eps_b = norms.broadcast_eps(eps, x)
    st, k = self._search(variables, x, y, key, eps_b)
    x_adv = build.finish(x, st['x_best'], eps_b, jnp.ones(x.shape[0], bool))
    if not self.return_info:
      return x_adv
    z = jnp.asarray(self._score(variables, np.asarray(x_adv), x.shape[0]))
    pred = jnp.argmax(z, axis=-1).astype(y.dtype)
    d = x_adv - x
    return x_adv, {'success': pred != y, 'margin': losses.label_margin(z, y),
                   'prediction': pred, 'queries': st['queries'],
                   'linf': norms.per_example_norm(d, 'linf'),
                   'l2': norms.per_example_norm(d, 'l2'),
                   'valid': jnp.ones(x.shape[0], bool)}

  def _search(self, variables, x, y, key, eps_b):
    geo = self._ops._Geometry(self.threat, x.shape[1:], self.corners)
    shape, b = x.shape[1:], x.shape[0]
    k_init, key = jax.random.split(key)
    x0 = self._fn(geo, shape, 'init')(k_init, x, eps_b)
    z0 = self._score(variables, np.asarray(x0), b)
    k = z0.shape[-1]
    if int(jnp.max(y)) >= k:
      raise ValueError(f'labels must be in [0, {k}), got max {int(jnp.max(y))}.')
    st = self._start(x0, jnp.asarray(z0), y)
    for start, end, s in self._ops._phases(
        self.queries, self.p_init, geo.spatial, self.threat.norm):
      propose = self._fn(geo, shape, s)
      for i in range(start, end):
        active = np.asarray(st['margin']) > 0
        if not active.any():
          return st, k
        x_new = propose(jax.random.fold_in(key, i), x, st['x_best'], eps_b)
        z = np.full((b, k), np.nan, np.float32)
        z[active] = self._score(variables, np.asarray(x_new)[active],
                                int(active.sum()))
        st = self._update(st, x_new, jnp.asarray(z), y)
    return st, k
