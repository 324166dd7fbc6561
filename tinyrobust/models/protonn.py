"""ProtoNN (Gupta et al., ICML 2017) as in Microsoft EdgeML.

Parameters (EdgeML's names and layouts):
  W `[D, d]`  sparse low-dimensional projection,
  B `[d, m]`  m prototypes in the projected space,
  Z `[L, m]`  prototype label vectors (L = num_classes),
  gamma       RBF width (a fixed hyperparameter, not trained).
Scores (used as logits):
  score_c(x) = sum_j Z[c, j] * exp(-gamma^2 * ||B[:, j] - W^T x||^2).

Training follows EdgeML: W random normal, prototypes B by k-means on the
projected training data and, when `gamma=None`, the median heuristic
gamma = 1 / (2.5 * median ||W^T x - B_j||) (`utils.medianHeuristic`); Z
one-hot of each cluster's majority class (EdgeML's C++ initialisation) when
labels are passed (`y_train`), else zero. With `gamma=None` the estimated
width is folded into W and B (the forward pass then uses gamma = 1), which is
the same function.
Sparsity: iterative hard thresholding of W, B, Z to the given densities.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tinyrobust.models import conventions
from tinyrobust.models import options
from tinyrobust.models import sparsity
from tinyrobust.models.registry import register

_KMEANS_MAX_ROWS = 20000


class ProtoNN(conventions.InputSpec, nn.Module):
  """ProtoNN classifier on feature vectors `[B, D]` -> scores `[B, L]`.

  Attributes:
    num_classes: L.
    projection_dim: d, the projected dimension.
    num_prototypes: m.
    gamma: RBF width; None = median heuristic at `data_init`.
    density_w, density_b, density_z: fraction of non-zeros kept per matrix
      by iterative hard thresholding (1 = dense, EdgeML's sW, sB, sZ).
    iht_start: training progress in [0, 1] where thresholding starts (EdgeML
      thresholds ProtoNN after every epoch from the first, i.e. 0).
    input_shape: `(D,)`, optional; checked against the input when set.
  """
  num_classes: int
  projection_dim: int = 5
  num_prototypes: int = 40
  gamma: float | None = None
  density_w: float = 1.0
  density_b: float = 1.0
  density_z: float = 1.0
  iht_start: float = 0.0
  input_shape: tuple[int, ...] | None = None

  input_kind: ClassVar[str] = 'features'
  default_input_shape: ClassVar[tuple[int, ...]] = (10,)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Scores of `x` `[B, D]` -> `[B, num_classes]` (`train` is unused)."""
    del train
    if x.ndim < 2:
      raise ValueError(f'ProtoNN expects features [B, D], got {x.shape}.')
    x = x.reshape(x.shape[0], -1)  # [B, ...] inputs are flattened.
    conventions.check_built_shape('ProtoNN', self.input_shape, x.shape[1:],
                                  x.shape)
    d, m, num_l = self.projection_dim, self.num_prototypes, self.num_classes
    normal = nn.initializers.normal(1.0)
    w = self.param('W', normal, (x.shape[1], d))
    b = self.param('B', normal, (d, m))
    z = self.param('Z', normal, (num_l, m))
    gamma = 1.0 if self.gamma is None else self.gamma
    wx = x @ w                                            # [B, d]
    dist = jnp.sum((b[None, :, :] - wx[:, :, None]) ** 2, axis=1)  # [B, m]
    sim = jnp.exp(-(gamma * gamma) * dist)
    return sim @ z.T

  @nn.nowrap
  def data_init(self, variables: dict[str, Any], x_train: np.ndarray,
                key: jax.Array, y_train: np.ndarray | None = None
                ) -> dict[str, Any]:
    """EdgeML initialisation: k-means prototypes, median-heuristic gamma.

    Args:
      variables: output of `init` (W already random normal).
      x_train: `[N, D]` training features (N >= num_prototypes).
      key: PRNG key (subsampling and k-means seed).
      y_train: optional `[N]` int labels; when given, Z[:, j] is the one-hot
        majority class of cluster j (EdgeML's C++ init), otherwise Z = 0.

    Returns:
      New variables with B (and W, Z) replaced.
    """
    from sklearn import cluster  # pylint: disable=g-import-not-at-top
    x = np.asarray(x_train, np.float64).reshape(len(x_train), -1)
    m = self.num_prototypes
    if len(x) < m:
      raise ValueError(f'data_init needs at least num_prototypes={m} '
                       f'training rows, got {len(x)}.')
    seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    rows = (rng.choice(len(x), _KMEANS_MAX_ROWS, replace=False)
            if len(x) > _KMEANS_MAX_ROWS else np.arange(len(x)))
    params = dict(variables['params'])
    w = np.asarray(params['W'], np.float64)
    xw = x[rows] @ w
    km = cluster.KMeans(n_clusters=m, n_init=3, random_state=seed).fit(xw)
    centers = km.cluster_centers_                       # [m, d]
    if self.gamma is None:
      dists = np.linalg.norm(xw[:, None, :] - centers[None], axis=-1)
      med = float(np.median(dists))
      scale = 1.0 / (2.5 * med) if med > 0 else 1.0
      w, centers = w * scale, centers * scale
    params['W'] = jnp.asarray(w, jnp.float32)
    params['B'] = jnp.asarray(centers.T, jnp.float32)
    # Without labels Z starts at 0: a random N(0, 1) Z gives confident
    # random scores that training undoes only slowly (wide RBF kernels).
    z = np.zeros(np.shape(params['Z']), np.float32)
    if y_train is not None:
      y = np.asarray(y_train).reshape(-1)[rows]
      for j in range(m):
        members = y[km.labels_ == j]
        if members.size:
          z[:, j] = np.eye(self.num_classes, dtype=np.float32)[
              np.bincount(members, minlength=self.num_classes).argmax()]
    params['Z'] = jnp.asarray(z)
    return {**variables, 'params': params}

  @nn.nowrap
  def project_params(self, params: dict[str, Any],
                     progress: jax.Array) -> dict[str, Any]:
    """IHT: keeps the top `density_*` fraction of W, B, Z (jit-safe)."""
    return sparsity.iht_project(
        params, {'W': self.density_w, 'B': self.density_b,
                 'Z': self.density_z}, progress, start=self.iht_start)


@register('protonn')
def protonn(num_classes: int, projection_dim: int = 5,
            num_prototypes: int = 40, gamma: float | None = None,
            density_w: float = 1.0, density_b: float = 1.0,
            density_z: float = 1.0, iht_start: float = 0.0,
            input_shape: Sequence[int] | None = None) -> nn.Module:
  """ProtoNN; defaults give 610 parameters on 10 HAR features, 9 classes."""
  return ProtoNN(
      num_classes=num_classes,
      projection_dim=options.integer('projection_dim', projection_dim),
      num_prototypes=options.integer('num_prototypes', num_prototypes),
      gamma=(None if gamma is None  # None: median heuristic
             else options.positive('gamma', gamma)),
      density_w=sparsity.check_density('density_w', density_w),
      density_b=sparsity.check_density('density_b', density_b),
      density_z=sparsity.check_density('density_z', density_z),
      iht_start=options.number('iht_start', iht_start, low=0.0, high=1.0),
      input_shape=options.shape('input_shape', input_shape, 1))
