"""Shared fixture: a tiny MLP trained on sklearn's digits (a few seconds)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest


def mlp_apply(v, x):
  """[B, 64] pixels in [0, 1] -> [B, 10] logits; one tanh hidden layer."""
  h = jnp.tanh(x.reshape(x.shape[0], -1) @ v['w1'] + v['b1'])
  return h @ v['w2'] + v['b2']


@pytest.fixture(scope='session')
def digits_mlp():
  """(apply_fn, variables, x_test [200, 64], y_test [200]) after 300 Adam
  steps on 1,400 training digits (test accuracy about 0.95)."""
  datasets = pytest.importorskip('sklearn.datasets')
  data = datasets.load_digits()
  x = (data.data / 16.0).astype(np.float32)
  y = data.target.astype(np.int32)
  perm = np.random.default_rng(0).permutation(len(x))
  x, y = x[perm], y[perm]
  x_tr, y_tr, x_te, y_te = x[:1400], y[:1400], x[1400:1600], y[1400:1600]
  rng = np.random.default_rng(1)
  v = {'w1': jnp.asarray(rng.normal(size=(64, 32)) / 8, jnp.float32),
       'b1': jnp.zeros((32,), jnp.float32),
       'w2': jnp.asarray(rng.normal(size=(32, 10)) / 6, jnp.float32),
       'b2': jnp.zeros((10,), jnp.float32)}
  opt = optax.adam(1e-2)

  @jax.jit
  def step(v, s, xb, yb):
    loss = lambda v: optax.softmax_cross_entropy_with_integer_labels(
        mlp_apply(v, xb), yb).mean()
    g = jax.grad(loss)(v)
    upd, s = opt.update(g, s, v)
    return optax.apply_updates(v, upd), s

  s = opt.init(v)
  for i in range(300):
    idx = np.arange(i * 128, (i + 1) * 128) % len(x_tr)
    v, s = step(v, s, x_tr[idx], y_tr[idx])
  return mlp_apply, v, jnp.asarray(x_te), jnp.asarray(y_te)
