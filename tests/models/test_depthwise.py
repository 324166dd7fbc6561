"""`depthwise_conv`: XLA forward, custom shifted-sum gradient == autodiff."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust.models import depthwise


@pytest.mark.parametrize('shape,kernel,stride', [
    ((2, 25, 5, 3), (3, 3), 1),   # DS-CNN block
    ((1, 9, 10, 2), (7, 7), 2),   # MCUNet large kernel, odd/even sizes
    ((1, 7, 6, 2), (3, 5), 2),
])
def test_custom_gradient_matches_xla_autodiff(shape, kernel, stride):
  x = jax.random.normal(jax.random.key(0), shape)
  k = jax.random.normal(jax.random.key(1), kernel + (1, shape[-1]))
  ours = lambda x, k: jnp.sin(depthwise.depthwise_conv(x, k, stride)).sum()
  ref = lambda x, k: jnp.sin(depthwise._conv(x, k, stride)).sum()
  for a, b in zip(jax.jit(jax.grad(ours, (0, 1)))(x, k),
                  jax.jit(jax.grad(ref, (0, 1)))(x, k)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_layer_params_match_grouped_flax_conv():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
  layer = depthwise.DepthwiseConv((3, 3), 2)
  v = layer.init(jax.random.key(1), x)
  ref = nn.Conv(4, (3, 3), strides=(2, 2), padding='SAME',
                feature_group_count=4)
  assert jax.tree_util.tree_map(jnp.shape, v) == jax.tree_util.tree_map(
      jnp.shape, ref.init(jax.random.key(1), x))
  np.testing.assert_allclose(layer.apply(v, x), ref.apply(v, x), rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize('shape,kernel,stride', [
    ((2, 25, 5, 3), (3, 3), 1), ((1, 9, 10, 2), (7, 7), 2),
    ((1, 7, 6, 2), (3, 5), 2), ((3, 4, 4, 8), (3, 3), 1)])
def test_shifted_forward_equals_the_grouped_convolution(shape, kernel, stride):
  x = jax.random.normal(jax.random.key(2), shape)
  k = jax.random.normal(jax.random.key(3), kernel + (1, shape[-1]))
  grouped = jax.lax.conv_general_dilated(
      x, k, (stride, stride), 'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=shape[-1])
  np.testing.assert_allclose(depthwise._shifted(x, k, stride), grouped,
                             rtol=1e-5, atol=1e-5)
  layer = depthwise.DepthwiseConv(kernel, stride)
  v = layer.init(jax.random.key(4), x)
  # A fresh function per trace, as the exporters and counters make one (a
  # traced function's cached trace is reused whatever the context).
  f = lambda: lambda v, x: layer.apply(v, x)
  with depthwise.shifted_forward():   # traced inside first: no stale cache
    shifted = jax.make_jaxpr(f())(v, x)
    inside = jax.jit(f())(v, x)
  plain = jax.make_jaxpr(f())(v, x)
  np.testing.assert_allclose(inside, f()(v, x), rtol=1e-5, atol=1e-5)
  # Outside the block the model keeps the one grouped convolution (what the
  # exporters and MAC counters look for); inside, on CPU, it has none.
  assert 'conv_general_dilated' in str(plain)
  cpu = jax.default_backend() == 'cpu'
  assert ('conv_general_dilated' in str(shifted)) != cpu
  with depthwise.shifted_forward():
    assert ('conv_general_dilated' in str(jax.make_jaxpr(f())(v, x))) != cpu
