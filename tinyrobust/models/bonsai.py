"""Bonsai (Kumar et al., ICML 2017) as in Microsoft EdgeML.

A sparse projection Z `[d, D']` maps x to x^ = Z x / d (EdgeML divides by
the projection dimension). A complete binary tree of depth `depth` has
N = 2^(depth+1) - 1 nodes and 2^depth - 1 internal nodes. Every node k holds
W_k, V_k `[L, d]` (stacked as W, V `[N * L, d]`, node-major like EdgeML);
internal node k holds a branching vector theta_k (rows of T `[2^depth-1, d]`).
Node k's path weight is the product, along the root path, of
(1 + s tanh(sigma_I theta_parent^T x^)) / 2, s = +1 for a left child (odd k)
and -1 for a right child, and

  score(x) = sum_k I_k(x) * (W_k x^) ∘ tanh(sigma * V_k x^).

`sigma` is fixed; the indicator sharpness sigma_I is annealed during training
(`train_kwargs`) and is 1e9 (a hard tree) at evaluation, as in EdgeML.
EdgeML appends a constant-1 feature to x before projecting
(`append_bias=True`). For two classes EdgeML keeps one score column with a
hinge loss; here every class has a score column (softmax cross-entropy).
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tinyrobust.models import conventions
from tinyrobust.models import options
from tinyrobust.models import sparsity
from tinyrobust.models.registry import register

SIGMA_I_EVAL = 1e9


def sigma_i_schedule(progress: jax.Array, *, sparse: bool,
                     scale: float = 1.0, cap: float = 1000.0) -> jax.Array:
  """EdgeML's annealing of the indicator sharpness sigma_I.

  EdgeML doubles sigma_I every `total_batches / 30` steps from 1 (times a
  data-dependent scale, here the constant `scale`) up to `cap`, restarting
  at each third of training when training is sparse (dense / IHT / sparse
  retraining phases).

  Args:
    progress: traced scalar in [0, 1].
    sparse: static; restart the schedule at 1/3 and 2/3.
    scale: initial sigma_I.
    cap: largest sigma_I.

  Returns:
    Scalar sigma_I.
  """
  p = jnp.asarray(progress, jnp.float32)
  phase_start = jnp.floor(p * 3.0) / 3.0 if sparse else 0.0
  return jnp.minimum(cap, scale * 2.0 ** (30.0 * (p - phase_start)))


class Bonsai(conventions.InputSpec, nn.Module):
  """Bonsai tree on feature vectors `[B, D]` -> scores `[B, L]`.

  Attributes:
    num_classes: L.
    projection_dim: d.
    depth: tree depth (0 = a single node).
    sigma: fixed tanh scale of the V path.
    append_bias: append a constant-1 feature before projecting (EdgeML).
    density_z, density_w, density_v, density_t: IHT densities (EdgeML's sZ,
      sW, sV, sT; 1 = dense).
    sigma_i_scale: initial sigma_I of the annealing schedule.
    input_shape: `(D,)`, optional; checked against the input when set.
  """
  num_classes: int
  projection_dim: int = 10
  depth: int = 1
  sigma: float = 1.0
  append_bias: bool = True
  density_z: float = 1.0
  density_w: float = 1.0
  density_v: float = 1.0
  density_t: float = 1.0
  sigma_i_scale: float = 1.0
  input_shape: tuple[int, ...] | None = None

  input_kind: ClassVar[str] = 'features'
  default_input_shape: ClassVar[tuple[int, ...]] = (10,)

  @property
  def num_nodes(self) -> int:
    return 2 ** (self.depth + 1) - 1

  @property
  def num_internal(self) -> int:
    return 2 ** self.depth - 1

  @property
  def sparse(self) -> bool:
    return min(self.density_z, self.density_w, self.density_v,
               self.density_t) < 1.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False,
               sigma_i: jax.Array | float | None = None) -> jax.Array:
    """Scores `[B, L]` of `x` `[B, D]`.

    Args:
      x: features `[B, D]`.
      train: unused (kept for the common signature).
      sigma_i: indicator sharpness; None = 1e9 (EdgeML's inference value).
    """
    del train
    if x.ndim < 2:
      raise ValueError(f'Bonsai expects features [B, D], got {x.shape}.')
    x = x.reshape(x.shape[0], -1)  # [B, ...] inputs are flattened.
    conventions.check_built_shape('Bonsai', self.input_shape, x.shape[1:],
                                  x.shape)
    if sigma_i is None:
      sigma_i = SIGMA_I_EVAL
    if self.append_bias:
      x = jnp.concatenate([x, jnp.ones_like(x[:, :1])], axis=1)
    d, n_l, n = self.projection_dim, self.num_classes, self.num_nodes
    normal = nn.initializers.normal(1.0)
    z = self.param('Z', normal, (d, x.shape[1]))
    w = self.param('W', normal, (n * n_l, d))
    v = self.param('V', normal, (n * n_l, d))
    t = self.param('T', normal, (max(self.num_internal, 0), d))
    xh = (x @ z.T) / d                                        # [B, d]
    wx = (xh @ w.T).reshape(x.shape[0], n, n_l)               # [B, N, L]
    vx = (xh @ v.T).reshape(x.shape[0], n, n_l)
    node_scores = wx * jnp.tanh(self.sigma * vx)
    probs = [jnp.ones((x.shape[0],), x.dtype)]
    if self.num_internal:
      branch = jnp.tanh(sigma_i * (xh @ t.T))                 # [B, internal]
    for k in range(1, n):
      parent = (k + 1) // 2 - 1
      sign = 1.0 if k % 2 == 1 else -1.0
      probs.append(probs[parent] * (1.0 + sign * branch[:, parent]) / 2.0)
    probs = jnp.stack(probs, axis=1)                          # [B, N]
    return jnp.sum(probs[:, :, None] * node_scores, axis=1)

  @nn.nowrap
  def train_kwargs(self, progress: jax.Array) -> dict[str, jax.Array]:
    """Annealed sigma_I for the training forward pass."""
    return {'sigma_i': sigma_i_schedule(progress, sparse=self.sparse,
                                        scale=self.sigma_i_scale)}

  @nn.nowrap
  def project_params(self, params: dict[str, Any],
                     progress: jax.Array) -> dict[str, Any]:
    """IHT from 1/3 of training on (EdgeML's dense/IHT/retrain phases)."""
    return sparsity.iht_project(
        params, {'Z': self.density_z, 'W': self.density_w,
                 'V': self.density_v, 'T': self.density_t},
        progress, start=1.0 / 3.0)


@register('bonsai')
def bonsai(num_classes: int, projection_dim: int = 10, depth: int = 1,
           sigma: float = 1.0, append_bias: bool = True,
           density_z: float = 1.0, density_w: float = 1.0,
           density_v: float = 1.0, density_t: float = 1.0,
           sigma_i_scale: float = 1.0,
           input_shape: Sequence[int] | None = None) -> nn.Module:
  """Bonsai; defaults give 660 parameters on 10 HAR features, 9 classes."""
  return Bonsai(
      num_classes=num_classes,
      projection_dim=options.integer('projection_dim', projection_dim),
      depth=options.integer('depth', depth, minimum=0, maximum=6),
      sigma=options.positive('sigma', sigma),
      append_bias=options.boolean('append_bias', append_bias),
      density_z=sparsity.check_density('density_z', density_z),
      density_w=sparsity.check_density('density_w', density_w),
      density_v=sparsity.check_density('density_v', density_v),
      density_t=sparsity.check_density('density_t', density_t),
      sigma_i_scale=options.positive('sigma_i_scale', sigma_i_scale),
      input_shape=options.shape('input_shape', input_shape, 1))
