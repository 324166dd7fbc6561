"""The patch-form convolution for small feature maps equals XLA's."""

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust.models import imagenet
from tinyrobust.models import small_conv

NHWC = ('NHWC', 'HWIO', 'NHWC')


@pytest.mark.parametrize('hw,k,strides,padding', [
    (2, 3, (1, 1), 'SAME'), (1, 3, (1, 1), 'SAME'), (4, 3, (2, 2), 'SAME'),
    (3, 3, (1, 1), 'VALID'), (4, 1, (1, 1), 'SAME'),
    (5, 3, (2, 1), ((1, 2), (0, 1))), (4, 7, (2, 2), ((3, 3), (3, 3)))])
def test_patch_conv_equals_xla_and_so_does_its_gradient(hw, k, strides,
                                                        padding):
  kx, kw = jax.random.split(jax.random.key(hw * 10 + k))
  x = jax.random.normal(kx, (3, hw, hw + 1, 5))
  w = jax.random.normal(kw, (k, k, 5, 4))
  ref = lambda x, w: lax.conv_general_dilated(
      x, w, strides, padding, dimension_numbers=NHWC)
  ours = lambda x, w: small_conv.patch_conv(x, w, strides, padding)
  np.testing.assert_allclose(ours(x, w), ref(x, w), rtol=1e-5, atol=1e-5)
  loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))
  for a, b in zip(jax.grad(loss(ours), (0, 1))(x, w),
                  jax.grad(loss(ref), (0, 1))(x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_patch_form_is_chosen_only_for_plain_small_convolutions():
  dn = lax.conv_dimension_numbers((1, 2, 2, 8), (3, 3, 8, 8), NHWC)
  small = dict(window_strides=(1, 1), padding='SAME', dimension_numbers=dn,
               backend='cpu')
  assert small_conv.use_patches((4, 2, 2, 8), (3, 3, 8, 8), **small)
  assert small_conv.use_patches((4, 4, 4, 8), (3, 3, 8, 8), **small)
  assert not small_conv.use_patches((4, 8, 8, 8), (3, 3, 8, 8), **small)
  assert small_conv.use_patches((4, 8, 8, 8), (3, 3, 8, 8), **dict(
      small, window_strides=(2, 2)))   # a 4x4 output
  for change in (dict(rhs_dilation=(2, 2)), dict(lhs_dilation=(2, 2)),
                 dict(feature_group_count=8), dict(backend='gpu'),
                 dict(backend='tpu'), dict(dimension_numbers=None)):
    assert not small_conv.use_patches((4, 2, 2, 8), (3, 3, 8, 8),
                                      **dict(small, **change)), change


def test_vgg19_keeps_its_parameters_and_its_outputs():
  # The zoo's convolutions go through the patch form on small maps: same
  # parameter tree as plain nn.Conv, same logits as XLA's convolution.
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
  model = imagenet.vgg19(10)
  variables = model.init(jax.random.key(1), x)
  names = sorted(variables['params'])
  assert names[:3] == ['Conv_0', 'Conv_1', 'Conv_10'] and 'Dense_0' in names
  assert variables['params']['Conv_15']['kernel'].shape == (3, 3, 512, 512)
  fast = model.apply(variables, x)
  saved = small_conv.MAX_PATCH_PIXELS
  try:
    small_conv.MAX_PATCH_PIXELS = 0
    plain = model.apply(variables, x)
  finally:
    small_conv.MAX_PATCH_PIXELS = saved
  np.testing.assert_allclose(fast, plain, rtol=1e-4, atol=1e-4)
