"""A convolution for small feature maps: patches times the kernel matrix.

XLA:CPU runs some convolutions whose feature map is barely larger than the
kernel orders of magnitude below its usual speed: on the 2-core machine
(`experiments/bench_small_conv.py`), a 3x3 SAME convolution of 512 to 512
channels over a 2x2 map (VGG19's last block at 32x32 inputs) took about 1 s
for 16 images (0.3 GFLOP/s, against 15 to 45 GFLOP/s for the same layer
over 4x4 or 8x8 maps), so VGG19's forward pass at 32x32 spent 4.4 of its 5 s
there. `conv_general_dilated` is a drop-in for `lax.conv_general_dilated`
(Flax's `nn.Conv(conv_general_dilated=...)`): for a plain convolution
(no dilation, one feature group) in the NHWC/HWIO layout whose output map
has at most `MAX_PATCH_PIXELS` pixels, it gathers the kernel's taps into
patches `[B, H', W', kh * kw * C]` and multiplies them by the kernel
reshaped to `[kh * kw * C, O]` (one matrix product, as XLA runs dense
layers); anything else goes to `lax.conv_general_dilated`. The result is the
same convolution (summed in another order, so equal up to float rounding),
the parameters keep their shape, and it runs on every backend (the patch
form only where it is chosen, see `use_patches`).
"""

from __future__ import annotations

from typing import Any

import jax
from jax import lax
import jax.numpy as jnp

# Output maps of at most this many pixels use the patch form on CPU
# (experiments/bench_small_conv.py: the patch form was faster at 1x1, 2x2
# and 4x4 maps; at 8x8 XLA's own convolution is at its usual speed).
MAX_PATCH_PIXELS = 16

_NHWC = ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


def _is_nhwc(dimension_numbers: Any, ndim: int) -> bool:
  if ndim != 4 or dimension_numbers is None:
    return False
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    return tuple(map(tuple, dimension_numbers)) == _NHWC
  return tuple(dimension_numbers) == ('NHWC', 'HWIO', 'NHWC')


def use_patches(lhs_shape, rhs_shape, window_strides, padding, *,
                lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                feature_group_count: int = 1, batch_group_count: int = 1,
                backend: str | None = None) -> bool:
  """Whether `conv_general_dilated` takes the patch form for these
  arguments (CPU only: GPU/TPU convolutions have no such slow path)."""
  if (backend or jax.default_backend()) != 'cpu':
    return False
  plain = lambda d: d is None or all(int(v) == 1 for v in d)
  if not (_is_nhwc(dimension_numbers, len(lhs_shape)) and plain(lhs_dilation)
          and plain(rhs_dilation) and feature_group_count == 1
          and batch_group_count == 1):
    return False
  pads = _pads(lhs_shape, rhs_shape, window_strides, padding)
  out = [(lhs_shape[1 + a] + sum(pads[a]) - rhs_shape[a])
         // window_strides[a] + 1 for a in (0, 1)]
  return min(out) >= 1 and out[0] * out[1] <= MAX_PATCH_PIXELS


def _pads(lhs_shape, rhs_shape, strides, padding):
  if isinstance(padding, str):
    return lax.padtype_to_pads(lhs_shape[1:3], rhs_shape[:2], strides,
                               padding)
  return [tuple(int(v) for v in p) for p in padding]


def patch_conv(lhs: jax.Array, rhs: jax.Array, window_strides, padding,
               precision=None, preferred_element_type=None) -> jax.Array:
  """NHWC x HWIO convolution as patches @ kernel matrix (see the module
  docstring); `padding` a lax padding string or (lo, hi) pairs."""
  kh, kw, c, o = rhs.shape
  sh, sw = window_strides
  (t, b), (l, r) = _pads(lhs.shape, rhs.shape, window_strides, padding)
  x = lax.pad(lhs, jnp.zeros((), lhs.dtype),
              ((0, 0, 0), (t, b, 0), (l, r, 0), (0, 0, 0)))
  oh = (x.shape[1] - kh) // sh + 1
  ow = (x.shape[2] - kw) // sw + 1
  taps = [x[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :]
          for i in range(kh) for j in range(kw)]
  patches = jnp.concatenate(taps, axis=-1)             # [B, oh, ow, kh*kw*C]
  return jnp.matmul(patches, rhs.reshape(kh * kw * c, o), precision=precision,
                    preferred_element_type=preferred_element_type)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count: int = 1,
                         batch_group_count: int = 1, precision=None,
                         preferred_element_type=None) -> jax.Array:
  """`lax.conv_general_dilated`, through `patch_conv` where `use_patches`."""
  window_strides = tuple(int(s) for s in window_strides)
  if use_patches(lhs.shape, rhs.shape, window_strides, padding,
                 lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
                 dimension_numbers=dimension_numbers,
                 feature_group_count=feature_group_count,
                 batch_group_count=batch_group_count):
    return patch_conv(lhs, rhs, window_strides, padding, precision,
                      preferred_element_type)
  return lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type)
