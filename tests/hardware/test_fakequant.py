"""The fake-quantised (simulated int8) forward pass, hardware/fakequant.py:
an integer closed form on a linear layer, LiteRT's int8 graph to one output
step on a conv net, and the straight-through gradient."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust import models
from tinyrobust.hardware import export
from tinyrobust.hardware import fakequant
from tinyrobust.hardware import litert


def test_linear_layer_equals_the_int8_integer_closed_form():
  """x -> Dense: int8 input (range [-1, 1]: scale 2/255, zero point 0),
  int8 weights per output channel, the bias fused into the int32
  accumulator, one int8 output tensor calibrated on the float logits."""
  rng = np.random.default_rng(0)
  model = models.get_model('mlp', 4, hidden=(), input_shape=(6,))
  v = jax.tree.map(np.asarray, model.init(jax.random.key(0),
                                          jnp.zeros((1, 6))))
  w = rng.normal(size=(6, 4)).astype(np.float32)
  b = rng.normal(size=(4,)).astype(np.float32)
  v['params']['Dense_0'].update(kernel=w, bias=b)
  x = rng.uniform(-1, 1, size=(200, 6)).astype(np.float32)
  x[0, :2] = -1.0, 1.0
  fq = fakequant.calibrate(model, v, x)
  # One weight point (per output channel) and one activation: the output.
  assert [list(p.values()) for p in fq.plan.weights.values()] == [[1]]
  assert list(fq.plan.acts.values()) == ['calibrated']
  s_in, z_in = fq.input_quantization
  assert s_in == pytest.approx(2 / 255) and z_in == 0
  s_out, z_out = fq.params[next(iter(fq.plan.acts))]
  logits = x @ w + b
  lo, hi = min(logits.min(), 0), max(logits.max(), 0)
  assert s_out == pytest.approx((hi - lo) / 255, rel=1e-6)
  assert -128 <= z_out <= 127
  # The integer path, as the int8 kernel computes it.
  q_x = np.clip(np.round(x / s_in) + z_in, -128, 127).astype(np.int32)
  s_w = np.abs(w).max(axis=0) / 127
  q_w = np.clip(np.round(w / s_w), -127, 127).astype(np.int32)
  acc = (q_x - z_in) @ q_w                      # int32 accumulator
  y = acc * (s_in * s_w) + b
  q_y = np.clip(np.round(y / s_out) + z_out, -128, 127)
  want = (q_y - z_out) * s_out
  got = np.asarray(jax.jit(fq.apply)(v, x))
  diff = np.abs(got - want)
  assert diff.max() <= s_out * 1.001          # a tie may round the other way
  assert np.mean(diff < 1e-5) > 0.98
  # Not the float model: the int8 grid shows.
  assert np.abs(got - logits).max() > 1e-3


class ConvNet(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    x = nn.relu(nn.Conv(6, (3, 3), strides=2)(x))
    return nn.Dense(3)(jnp.mean(x, axis=(1, 2)))


def test_fake_quant_matches_litert_to_one_step_on_a_conv_net():
  pytest.importorskip('ai_edge_litert')
  model = ConvNet()
  v = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  x = np.random.default_rng(0).normal(size=(64, 8, 8, 1)).astype(np.float32)
  fb = export.export_tflite(model, v, (8, 8, 1), quantize='int8',
                            representative_data=x)
  fq = fakequant.calibrate(model, v, x)
  runner = litert.LiteRT(fb)
  assert fq.input_quantization == pytest.approx(
      runner.inp['quantization'], rel=1e-5)
  step = runner.out['quantization'][0]
  lite = runner(x)
  got = np.asarray(jax.jit(fq.apply)(v, x))
  assert np.max(np.abs(got - lite)) <= step * 1.001
  # The float model is further away: the simulation is not a no-op.
  ref = np.asarray(model.apply(v, x))
  assert np.max(np.abs(ref - lite)) > np.max(np.abs(got - lite))
  # Batched LiteRT equals one example at a time; gradients pass the STE.
  np.testing.assert_array_equal(runner.run_quantized(runner.quantize_input(
      x[:5])), runner._one(runner.quantize_input(x[:5])))
  g = jax.grad(lambda a: fq.apply(v, a).sum())(x[:2])
  assert np.all(np.isfinite(g)) and np.abs(g).sum() > 0


def test_bad_representative_data_is_named():
  model = models.get_model('mlp', 4, hidden=(), input_shape=(6,))
  v = model.init(jax.random.key(0), jnp.zeros((1, 6)))
  with pytest.raises(ValueError, match='non-finite'):
    fakequant.calibrate(model, v, np.full((4, 6), np.nan, np.float32))
