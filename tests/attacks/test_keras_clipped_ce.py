"""'keras_clipped_ce' equals Keras' CategoricalCrossentropy on softmax
outputs, value and gradient, and masks the gradient of confident examples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust import tf_setup
from tinyrobust.attacks import losses

pytest.importorskip('keras')

# Rows: moderate logits, a margin of 30 (p_y = 1 in float32: clipped), a
# margin of 30 against the label (p_y ~ 1e-13 < 1e-7: clipped too), and a
# margin of 12 (p_y = 1 - 6e-6: not clipped).
LOGITS = np.float32([[0.3, -1.2, 2.0, 0.1],
                     [30.0, 0.0, -1.0, 0.5],
                     [-30.0, 0.0, 1.0, -2.0],
                     [12.0, 0.0, -3.0, -1.0]])
LABELS = np.int32([2, 0, 0, 0])


def _keras_loss_and_grad():
  """Keras 3's loss of tf.nn.softmax(logits), and its gradient w.r.t. the
  logits, in eager mode (the study's attack setting)."""
  tf = tf_setup.import_tf()
  import keras  # pylint: disable=g-import-not-at-top
  z = tf.constant(LOGITS)
  onehot = tf.one_hot(LABELS, LOGITS.shape[1])
  cce = keras.losses.CategoricalCrossentropy(reduction=None)
  with tf.GradientTape() as tape:
    tape.watch(z)
    loss = cce(onehot, tf.nn.softmax(z))
    total = tf.reduce_sum(loss)
  return np.asarray(loss), np.asarray(tape.gradient(total, z))


def test_value_and_gradient_equal_keras():
  ref_loss, ref_grad = _keras_loss_and_grad()
  fn = losses.get_loss('keras_clipped_ce')
  loss = np.asarray(fn(jnp.asarray(LOGITS), jnp.asarray(LABELS)))
  grad = np.asarray(jax.grad(lambda z: fn(z, jnp.asarray(LABELS)).sum())(
      jnp.asarray(LOGITS)))
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-7)
  # The clip's constants: -log(1 - 1e-7) and -log(1e-7).
  np.testing.assert_allclose(loss[1], -np.log(np.float32(1 - 1e-7)),
                             rtol=1e-3)
  np.testing.assert_allclose(loss[2], -np.log(1e-7), rtol=1e-6)


def test_gradient_is_exactly_zero_where_p_y_is_clipped():
  fn = losses.keras_clipped_cross_entropy
  grad = np.asarray(jax.grad(lambda z: fn(z, jnp.asarray(LABELS)).sum())(
      jnp.asarray(LOGITS)))
  p_y = np.asarray(jax.nn.softmax(LOGITS))[np.arange(4), LABELS]
  clipped = (p_y > 1 - 1e-7) | (p_y < 1e-7)
  assert clipped.tolist() == [False, True, True, False]
  assert np.all(grad[clipped] == 0.0)
  assert np.all(np.abs(grad[~clipped]).max(axis=1) > 0)
  # 'ce' on logits keeps a gradient there (what the clip masks).
  ce_grad = jax.grad(lambda z: losses.cross_entropy(
      z, jnp.asarray(LABELS)).sum())(jnp.asarray(LOGITS))
  assert np.all(np.abs(np.asarray(ce_grad)[clipped]).max(axis=1) > 0)
