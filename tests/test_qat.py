"""int8-aware training (tinyrobust.qat): the weights' straight-through
gradient in closed form, train steps through the fake-quantised forward
lower its loss, and an int8-aware run's LiteRT int8 export agrees with its
fake-quantised forward."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.configs.train import digits_cnn
from tinyrobust import data as data_lib
from tinyrobust import hardware
from tinyrobust import models
from tinyrobust import qat
from tinyrobust import train
from tinyrobust.hardware import export
from tinyrobust.hardware import fakequant
from tinyrobust.hardware import litert


def test_weight_gradient_is_the_straight_through_closed_form():
  """x -> Dense: logits = fq(fq(x) @ q(W) + b). Through the STE,
  d/dW sum(g * logits) = fq(x)^T g and d/db = sum_i g_i, with fq(x) the
  int8-rounded input (rounding's own gradient would make dW zero)."""
  rng = np.random.default_rng(0)
  model = models.get_model('mlp', 4, hidden=(), input_shape=(6,))
  v = jax.tree.map(np.asarray, model.init(jax.random.key(0),
                                          jnp.zeros((1, 6))))
  x = rng.uniform(-1, 1, size=(50, 6)).astype(np.float32)
  qm = qat.wrap(model, v, x)
  g = rng.normal(size=(50, 4)).astype(np.float32)
  grads = jax.jit(jax.grad(lambda p: jnp.sum(g * qm.apply({'params': p}, x))))(
      v['params'])['Dense_0']
  s, z = qm.fake_quant.input_quantization
  xq = (np.clip(np.round(x / s) + z, -128, 127) - z) * s
  assert np.abs(xq - x).max() > 1e-3       # the input really is rounded
  np.testing.assert_allclose(grads['kernel'], xq.T @ g, rtol=1e-4,
                             atol=1e-5)
  np.testing.assert_allclose(grads['bias'], g.sum(0), rtol=1e-5, atol=1e-5)
  # The forward is the int8 simulation; train-mode calls return the batch
  # statistics unchanged.
  apply = jax.jit(qm.apply)
  assert np.abs(apply(v, x) - model.apply(v, x)).max() > 1e-3
  logits, new = jax.jit(lambda v, x: qm.apply(
      v, x, train=True, mutable=['batch_stats']))(v, x)
  np.testing.assert_array_equal(logits, apply(v, x))
  assert new == {'batch_stats': None}


def test_train_steps_through_the_fake_quantised_forward_lower_its_loss():
  rng = np.random.default_rng(1)
  x = rng.uniform(0, 1, size=(64, 12)).astype(np.float32)
  y = np.argmax(x @ rng.normal(size=(12, 3)), -1).astype(np.int32)
  model = models.get_model('mlp', 3, hidden=(16,), input_shape=(12,))
  v = jax.tree.map(np.asarray, model.init(jax.random.key(0), x[:1]))
  qm = qat.wrap(model, v, x)
  tx = optax.adam(1e-2)
  state = train.TrainState(params=v['params'], batch_stats=None,
                           opt_state=tx.init(v['params']),
                           step=jnp.zeros((), jnp.int32))
  step = jax.jit(train.make_train_step(qm, tx, num_classes=3,
                                       total_steps=25))
  losses = []
  for i in range(25):
    state, m = step(state, x, y, jax.random.key(i))
    losses.append(float(m['loss']))
  # The step's loss is the fake-quantised model's cross-entropy.
  ce = lambda logits: float(optax.softmax_cross_entropy_with_integer_labels(
      logits, y).mean())
  assert losses[0] == pytest.approx(ce(jax.jit(qm.apply)(v, x)), rel=1e-5)
  assert abs(losses[0] - ce(model.apply(v, x))) > 1e-4
  assert losses[-1] < 0.7 * losses[0], losses
  # The kernels moved (all but dead ReLU units' rows): the gradient passed
  # the weights' rounding, whose own gradient is zero.
  for name in ('Dense_0', 'Dense_1'):
    moved = state.params[name]['kernel'] != v['params'][name]['kernel']
    assert np.mean(moved) > 0.5, (name, np.mean(moved))


def test_int8_aware_run_exports_to_litert_as_its_fake_quantised_forward(
    tmp_path):
  pytest.importorskip('ai_edge_litert')
  c = digits_cnn.get_config()
  c.model.name, c.model.kwargs = 'mlp', {'hidden': (16,)}
  c.train.epochs, c.train.qat_epochs, c.train.progress_bar = 1, 1, False
  c.train.learning_rate = 1e-2
  metrics, v = train.train_and_evaluate(c, str(tmp_path))
  assert metrics['test_accuracy'] > 0.4   # one int8-aware epoch; chance 0.1
  model, v, _ = train.load_trained(str(tmp_path))
  rep = hardware.representative(data_lib.load('digits', 'train', seed=0).x)
  test = data_lib.load('digits', 'test', seed=0)
  runner = litert.LiteRT(export.export_tflite(
      model, v, (8, 8, 1), quantize='int8', representative_data=rep))
  fq = fakequant.calibrate(model, v, rep)
  lite, got = runner(test.x), np.asarray(jax.jit(fq.apply)(v, test.x))
  assert np.max(np.abs(got - lite)) <= runner.out['quantization'][0] * 1.001
  assert np.mean(np.argmax(got, -1) == np.argmax(lite, -1)) >= 0.99
  lite_acc = np.mean(np.argmax(lite, -1) == test.y)
  assert lite_acc >= metrics['test_accuracy'] - 0.03, lite_acc


def test_qat_epochs_is_a_base_config_field_that_older_pins_tolerate():
  """`--config.train.qat_epochs=k` needs the field in the base config; a
  workdir pinned before it existed (no field) still matches a config with
  it off, and not one with it on, at any depth (a study nests train
  configs)."""
  from tinyrobust import config_io
  cfg = digits_cnn.get_config('quick')
  assert cfg.train.qat_epochs == 0 and qat.qat_epochs(cfg) == 0
  new = config_io.config_json(cfg)
  old = {**new, 'train': {k: v for k, v in new['train'].items()
                          if k != 'qat_epochs'}}
  assert list(config_io.diff_keys(old, new)) == []
  on = {**new, 'train': {**new['train'], 'qat_epochs': 2}}
  assert list(config_io.diff_keys(old, on)) == ['train.qat_epochs']
  nest = lambda d: {'tasks': {'t': {'models': {'m': {'config': d}}}}}
  assert list(config_io.diff_keys(nest(old), nest(new))) == []
  assert list(config_io.diff_keys(nest(old), nest(on))) == [
      'tasks.t.models.m.config.train.qat_epochs']
