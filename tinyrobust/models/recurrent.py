"""Keras-exact recurrent layers: LSTM, GRU (reset_after) and Bidirectional.

The parameters keep Keras' layout, so trained Keras weights copy over as
they are (`tinyrobust.models.keras_import`):

* `LSTM(units)`: `kernel [F, 4u]`, `recurrent_kernel [u, 4u]`, `bias [4u]`,
  gates in Keras' order i, f, c, o; `c' = f c + i tanh(.)`,
  `h' = o tanh(c')` (sigmoid gates, tanh activations, zero initial state).
* `GRU(units)`: Keras' default `reset_after=True`: `kernel [F, 3u]`,
  `recurrent_kernel [u, 3u]`, `bias [2, 3u]` (input and recurrent biases),
  gates z, r, h: `z = s(x W_z + h U_z + b)`, `r = s(...)`,
  `n = tanh(x W_h + b_h + r (h U_h + b'_h))`, `h' = z h + (1 - z) n`.
* `Bidirectional(layer)`: a forward and a backward copy (`forward`,
  `backward`), outputs concatenated on the feature axis (Keras'
  `merge_mode='concat'`).

Each runs a `lax.scan` over the time axis of `[B, T, F]` and returns the
last state `[B, u]` or, with `return_sequences`, `[B, T, u]`. Initialisers
are Keras' (Glorot-uniform kernel, orthogonal recurrent kernel, zero bias,
LSTM forget-gate bias 1).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

_GLOROT = nn.initializers.glorot_uniform()
_ORTHO = nn.initializers.orthogonal()


def _lstm_bias(key, shape, dtype=jnp.float32):
  units = shape[0] // 4
  return jnp.zeros(shape, dtype).at[units:2 * units].set(1.0)


def _keras_params(module: nn.Module, features: int, gates: int, bias_init,
                  bias_shape):
  """Keras' `kernel [F, gates]`, `recurrent_kernel [u, gates]` and bias."""
  units = module.units
  return (module.param('kernel', _GLOROT, (features, gates)),
          module.param('recurrent_kernel', _ORTHO, (units, gates)),
          module.param('bias', bias_init, bias_shape))


def _scan(step, carry, xs: jax.Array, reverse: bool):
  """Scans `step` over axis 1 of `xs` `[B, T, ...]`; outputs `[B, T, u]`."""
  carry, ys = jax.lax.scan(step, carry, jnp.swapaxes(xs, 0, 1),
                           reverse=reverse)
  return carry, jnp.swapaxes(ys, 0, 1)


class LSTM(nn.Module):
  """Keras `LSTM(units, return_sequences=...)` on `[B, T, F]`."""
  units: int
  return_sequences: bool = False
  reverse: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    u = self.units
    w, rw, b = _keras_params(self, x.shape[-1], 4 * u, _lstm_bias, (4 * u,))
    xw = x @ w + b  # input projections of all steps at once

    def step(carry, xt):
      h, c = carry
      z = xt + h @ rw
      i, f, g, o = jnp.split(z, 4, axis=-1)
      c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
      h = jax.nn.sigmoid(o) * jnp.tanh(c)
      return (h, c), h

    zeros = jnp.zeros((x.shape[0], u), xw.dtype)
    (h, _), hs = _scan(step, (zeros, zeros), xw, self.reverse)
    if self.return_sequences:
      return hs
    return h


class GRU(nn.Module):
  """Keras `GRU(units, reset_after=True, return_sequences=...)`."""
  units: int
  return_sequences: bool = False
  reverse: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    u = self.units
    w, rw, b = _keras_params(self, x.shape[-1], 3 * u, nn.initializers.zeros,
                             (2, 3 * u))
    xw = x @ w + b[0]

    def step(h, xt):
      hr = h @ rw + b[1]
      xz, xr, xh = jnp.split(xt, 3, axis=-1)
      hz, hr_, hh = jnp.split(hr, 3, axis=-1)
      z = jax.nn.sigmoid(xz + hz)
      r = jax.nn.sigmoid(xr + hr_)
      n = jnp.tanh(xh + r * hh)
      h = z * h + (1.0 - z) * n
      return h, h

    h, hs = _scan(step, jnp.zeros((x.shape[0], u), xw.dtype), xw,
                  self.reverse)
    return hs if self.return_sequences else h


class Bidirectional(nn.Module):
  """Keras `Bidirectional(LSTM|GRU(units), merge_mode='concat')`."""
  units: int
  cell: str = 'lstm'
  return_sequences: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    layer = {'lstm': LSTM, 'gru': GRU}[self.cell]
    fwd = layer(self.units, self.return_sequences, name='forward')(x)
    bwd = layer(self.units, self.return_sequences, reverse=True,
                name='backward')(x)
    return jnp.concatenate([fwd, bwd], axis=-1)
