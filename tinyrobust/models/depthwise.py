"""Depthwise 2-D convolution with a fast CPU gradient.

XLA:CPU differentiates grouped convolutions (`feature_group_count = C`)
slowly: the DS-CNN backward pass is ~5x slower than the same maths written
as k*k shifted multiply-adds. `depthwise_conv` keeps the forward pass a
plain `lax.conv_general_dilated` (so exporters such as jax2tf/TFLite still
see one DEPTHWISE_CONV_2D op) and gives it a `custom_vjp` whose backward pass
is the shifted multiply-add form. `DepthwiseConv` is the Flax layer; its
parameters match `nn.Conv(C, k, feature_group_count=C)`: kernel
`[kh, kw, 1, C]` and bias `[C]`, 'SAME' padding (TF convention).

The forward pass is slow on XLA:CPU too (a [72, 25, 5, 64] 3x3 depthwise
convolution: 34.2 ms grouped, 1.7 ms as shifted multiply-adds; 13-33x
over three shapes, `experiments/bench_small_conv.py`). Inside
`shifted_forward()` (the evaluation scheduler's attacks), on CPU, the
forward pass is the shifted form as well; everywhere else (export,
hardware counting, training) it stays the one grouped convolution the
exporters and MAC counters look for. The choice is made when the model is
traced: a jitted function traced before the block keeps its grouped form
inside it (same values, slower).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp


def _same_pads(size: int, k: int, s: int) -> tuple[int, int, int]:
  out = -(-size // s)
  total = max((out - 1) * s + k - size, 0)
  return out, total // 2, total - total // 2


_SHIFTED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    'tinyrobust_depthwise_shifted', default=False)


@contextlib.contextmanager
def shifted_forward(on: bool = True):
  """Within the block (per thread), models traced on CPU compute depthwise
  convolutions as k*k shifted multiply-adds (same values up to rounding)."""
  token = _SHIFTED.set(bool(on))
  try:
    yield
  finally:
    _SHIFTED.reset(token)


def _padded(x, kernel, stride):
  """'SAME' geometry: the padded input, the (top, left) pads, and the span
  of input rows/columns one tap reads; output pixel (r, c) reads
  xp[r * s + i, c * s + j] for tap (i, j)."""
  kh, kw = kernel.shape[:2]
  _, h, w, _ = x.shape
  oh, top, bottom = _same_pads(h, kh, stride)
  ow, left, right = _same_pads(w, kw, stride)
  xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  return xp, (top, left), ((oh - 1) * stride + 1, (ow - 1) * stride + 1)


def _shifted(x, kernel, stride):
  """The 'SAME' depthwise convolution as a sum over the kernel's taps."""
  kh, kw = kernel.shape[:2]
  xp, _, (span_h, span_w) = _padded(x, kernel, stride)
  taps = [xp[:, i:i + span_h:stride, j:j + span_w:stride, :] * kernel[i, j, 0]
          for i in range(kh) for j in range(kw)]
  return functools.reduce(jnp.add, taps)


def use_shifted() -> bool:
  """Whether a model traced now takes the shifted forward pass."""
  return _SHIFTED.get() and jax.default_backend() == 'cpu'


def _conv(x, kernel, stride, shifted=False):
  if shifted:
    return _shifted(x, kernel, stride)
  return jax.lax.conv_general_dilated(
      x, kernel, (stride, stride), 'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=x.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int,
                   shifted: bool = False) -> jax.Array:
  """Depthwise conv, 'SAME' padding: x `[B, H, W, C]`, kernel `[kh, kw, 1, C]`;
  `shifted`: the forward pass as shifted multiply-adds (a static argument,
  so traces of the two forms are cached apart; `DepthwiseConv` passes
  `use_shifted()`).

  Returns `[B, ceil(H / stride), ceil(W / stride), C]`.
  """
  return _conv(x, kernel, stride, shifted)


def _fwd(x, kernel, stride, shifted):
  return _conv(x, kernel, stride, shifted), (x, kernel)


def _bwd(stride, shifted, res, g):
  del shifted
  x, kernel = res
  kh, kw = kernel.shape[:2]
  _, h, w, _ = x.shape
  xp, (top, left), (span_h, span_w) = _padded(x, kernel, stride)
  # Spread g onto the stride grid once; tap (i, j) is then a shifted window.
  g_up = jax.lax.pad(g, jnp.zeros((), g.dtype),
                     ((0, 0, 0), (0, 0, stride - 1), (0, 0, stride - 1),
                      (0, 0, 0)))                      # [B, span_h, span_w, C]
  hp, wp = xp.shape[1], xp.shape[2]
  dk = []
  dxp = jnp.zeros_like(xp)
  for i in range(kh):
    row = []
    for j in range(kw):
      window = xp[:, i:i + span_h:stride, j:j + span_w:stride, :]
      row.append(jnp.sum(window * g, axis=(0, 1, 2)))
      dxp = dxp + jnp.pad(g_up * kernel[i, j, 0],
                          ((0, 0), (i, hp - i - span_h), (j, wp - j - span_w),
                           (0, 0)))
    dk.append(jnp.stack(row))
  dkernel = jnp.stack(dk)[:, :, None, :].astype(kernel.dtype)
  dx = dxp[:, top:top + h, left:left + w, :]
  return dx, dkernel


depthwise_conv.defvjp(_fwd, _bwd)


class DepthwiseConv(nn.Module):
  """Depthwise kxk convolution layer (channel multiplier 1, 'SAME').

  Attributes:
    kernel_size: (kh, kw).
    strides: equal stride on both spatial axes.
    use_bias: add a per-channel bias.
    kernel_init: initializer of the `[kh, kw, 1, C]` kernel.
  """
  kernel_size: tuple[int, int]
  strides: int = 1
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    kernel = self.param('kernel', self.kernel_init,
                        tuple(self.kernel_size) + (1, c))
    y = depthwise_conv(x, kernel, int(self.strides), use_shifted())
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (c,))
    return y
