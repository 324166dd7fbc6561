"""FastRNN and FastGRNN (Kusupati et al., NeurIPS 2018) as in Microsoft EdgeML.

Cells (EdgeML `pytorch/edgeml_pytorch/graph/rnn.py`; x_t `[B, C]`, h `[B, H]`,
row-vector convention `x W`, W `[C, H]`, U `[H, H]`):

  FastRNN:   h~  = tanh(x W + h U + b_h)
             h_t = sigmoid(alpha) * h~ + sigmoid(beta) * h_{t-1}
  FastGRNN:  pre = x W + h U
             z   = sigmoid(pre + b_z);  h~ = tanh(pre + b_h)
             h_t = (sigmoid(zeta) * (1 - z) + sigmoid(nu)) * h~ + z * h_{t-1}

with EdgeML's initial values: W, U ~ 0.1 N(0, 1), biases 1, alpha = -3,
beta = 3, zeta = 1, nu = -4 (the scalars pass through a sigmoid). Optional
low rank: W = W1 W2 (`w_rank`), U = U1 U2 (`u_rank`). Sparsity: iterative
hard thresholding of the W and U factors (dense / IHT / retrain thirds).
The sequence `[B, T, C]` is run with `lax.scan` from h_0 = 0 and a dense
classifier reads the final state.
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

_CELLS = ('fastrnn', 'fastgrnn')
# EdgeML initial values of the scalar gate parameters (before the sigmoid).
EDGEML_INIT = {'alpha': -3.0, 'beta': 3.0, 'zeta': 1.0, 'nu': -4.0}


class FastCell(nn.Module):
  """One FastRNN / FastGRNN cell's parameters; `__call__` scans a sequence.

  Attributes:
    cell: 'fastrnn' or 'fastgrnn'.
    hidden_size: H.
    w_rank, u_rank: ranks of the W = W1 W2 and U = U1 U2 factorisations, or
      None for full-rank W and U.
  """
  cell: str
  hidden_size: int
  w_rank: int | None = None
  u_rank: int | None = None

  def _matrix(self, name, rank, rows):
    init = nn.initializers.normal(0.1)
    h = self.hidden_size
    if rank is None:
      return self.param(name, init, (rows, h))
    return (self.param(name + '1', init, (rows, rank)),
            self.param(name + '2', init, (rank, h)))

  @nn.compact
  def __call__(self, xs: jax.Array) -> jax.Array:
    """Runs the cell over `xs` `[B, T, C]`; returns the final state `[B, H]`."""
    h_size = self.hidden_size
    w = self._matrix('W', self.w_rank, xs.shape[-1])
    u = self._matrix('U', self.u_rank, h_size)
    ones = nn.initializers.ones
    const = lambda v: (lambda key, shape: jnp.full(shape, v, jnp.float32))
    b_h = self.param('bias_update', ones, (h_size,))
    if self.cell == 'fastrnn':
      alpha = self.param('alpha', const(EDGEML_INIT['alpha']), ())
      beta = self.param('beta', const(EDGEML_INIT['beta']), ())
      gates = (jax.nn.sigmoid(alpha), jax.nn.sigmoid(beta))
    else:
      b_z = self.param('bias_gate', ones, (h_size,))
      zeta = self.param('zeta', const(EDGEML_INIT['zeta']), ())
      nu = self.param('nu', const(EDGEML_INIT['nu']), ())
      gates = (jax.nn.sigmoid(zeta), jax.nn.sigmoid(nu))

    def matmul(a, m):
      return a @ m if not isinstance(m, tuple) else (a @ m[0]) @ m[1]

    # x W for all steps at once: one big matmul instead of T small ones.
    xw = matmul(xs, w)                                     # [B, T, H]

    def step(h, xw_t):
      pre = xw_t + matmul(h, u)
      if self.cell == 'fastrnn':
        h = gates[0] * jnp.tanh(pre + b_h) + gates[1] * h
      else:
        z = jax.nn.sigmoid(pre + b_z)
        h = (gates[0] * (1.0 - z) + gates[1]) * jnp.tanh(pre + b_h) + z * h
      return h, None

    h0 = jnp.zeros((xs.shape[0], h_size), xs.dtype)
    h, _ = jax.lax.scan(step, h0, jnp.swapaxes(xw, 0, 1))
    return h


class FastRNNClassifier(conventions.InputSpec, nn.Module):
  """FastRNN/FastGRNN over `[B, T, C]` + dense layer on the final state.

  Attributes:
    num_classes: number of logits.
    cell: 'fastrnn' or 'fastgrnn'.
    hidden_size: H.
    w_rank, u_rank: low-rank factor ranks (None = full rank).
    density_w, density_u: IHT densities of the W and U factors (EdgeML's
      sW, sU; 1 = dense).
    input_shape: `(T, C)`, optional; checked against the input when set.
  """
  num_classes: int
  cell: str = 'fastgrnn'
  hidden_size: int = 10
  w_rank: int | None = None
  u_rank: int | None = None
  density_w: float = 1.0
  density_u: float = 1.0
  input_shape: tuple[int, ...] | None = None

  input_kind: ClassVar[str] = 'sequence'
  default_input_shape: ClassVar[tuple[int, ...]] = (550, 6)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Logits `[B, num_classes]` of sequences `x` `[B, T, C]`."""
    del train
    if x.ndim != 3:
      raise ValueError(f'{self.cell} expects sequences [B, T, C], got '
                       f'{x.shape}.')
    conventions.check_built_shape(self.cell, self.input_shape, x.shape[1:],
                                  x.shape)
    h = FastCell(self.cell, self.hidden_size, self.w_rank, self.u_rank,
                 name='cell')(x)
    return nn.Dense(self.num_classes, name='classifier')(h)

  @nn.nowrap
  def project_params(self, params: dict[str, Any],
                     progress: jax.Array) -> dict[str, Any]:
    """IHT of W (or W1, W2) and U (or U1, U2) from 1/3 of training on."""
    dens = {}
    for name, rank, dn in (('W', self.w_rank, self.density_w),
                           ('U', self.u_rank, self.density_u)):
      for leaf in ([name] if rank is None else [name + '1', name + '2']):
        dens['cell/' + leaf] = dn
    return sparsity.iht_project(params, dens, progress, start=1.0 / 3.0)


def _build(cell, num_classes, hidden_size, w_rank, u_rank, density_w,
           density_u, input_shape):
  if cell not in _CELLS:
    raise ValueError(f'Unknown cell {cell!r}. Valid: {_CELLS}.')
  return FastRNNClassifier(
      num_classes=num_classes, cell=cell,
      hidden_size=options.integer('hidden_size', hidden_size),
      w_rank=options.optional_integer('w_rank', w_rank),  # None: full rank
      u_rank=options.optional_integer('u_rank', u_rank),
      density_w=sparsity.check_density('density_w', density_w),
      density_u=sparsity.check_density('density_u', density_u),
      input_shape=options.shape('input_shape', input_shape, 2))


@register('fastrnn')
def fastrnn(num_classes: int, hidden_size: int = 6, w_rank: int | None = None,
            u_rank: int | None = None, density_w: float = 1.0,
            density_u: float = 1.0,
            input_shape: Sequence[int] | None = None) -> nn.Module:
  """FastRNN; default H=6 gives 143 parameters on 6-channel IMU, 9 classes."""
  return _build('fastrnn', num_classes, hidden_size, w_rank, u_rank,
                density_w, density_u, input_shape)


@register('fastgrnn')
def fastgrnn(num_classes: int, hidden_size: int = 10,
             w_rank: int | None = None, u_rank: int | None = None,
             density_w: float = 1.0, density_u: float = 1.0,
             input_shape: Sequence[int] | None = None) -> nn.Module:
  """FastGRNN; default H=10 gives 281 parameters on 6-channel IMU, 9 classes."""
  return _build('fastgrnn', num_classes, hidden_size, w_rank, u_rank,
                density_w, density_u, input_shape)
