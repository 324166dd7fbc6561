"""ProtoNN, Bonsai, FastRNN, FastGRNN and IHT against NumPy transcriptions
of Microsoft EdgeML's equations, on the same random weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust.models import bonsai as bonsai_lib
from tinyrobust.models import get_model
from tinyrobust.models import sparsity

TOL = dict(rtol=1e-5, atol=1e-5)


def _sigmoid(a):
  return 1.0 / (1.0 + np.exp(-a))


def _randomize(variables, seed, scale=0.5):
  """Replaces every parameter by fresh random normal values (float32)."""
  leaves, tree = jax.tree_util.tree_flatten(variables['params'])
  rng = np.random.default_rng(seed)
  new = [np.asarray(rng.normal(0.0, scale, np.shape(l)), np.float32)
         for l in leaves]
  return {'params': jax.tree_util.tree_unflatten(tree, new)}


def _np(tree):
  return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


# --- ProtoNN: EdgeML tf/edgeml_tf/tflite/protoNNLayer.py -------------------

def protonn_numpy(x, w, b, z, gamma):
  wx = x @ w                                     # [B, d]
  l2 = np.sum((b[None, :, :] - wx[:, :, None]) ** 2, axis=1, keepdims=True)
  m = np.exp(-gamma * gamma * l2)                # [B, 1, m]
  return np.sum(z[None] * m, axis=2)             # [B, L]


@pytest.mark.parametrize('gamma', [0.3, 1.7])
def test_protonn_matches_edgeml_equation(gamma):
  model = get_model('protonn', 4, projection_dim=3, num_prototypes=7,
                    gamma=gamma)
  x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
  v = _randomize(model.init(jax.random.key(0), x), 1)
  p = _np(v['params'])
  want = protonn_numpy(x.astype(np.float64), p['W'], p['B'], p['Z'], gamma)
  np.testing.assert_allclose(model.apply(v, x), want, **TOL)


# --- Bonsai: EdgeML pytorch/edgeml_pytorch/graph/bonsai.py -----------------

def bonsai_numpy(x, z, w, v, t, sigma, sigma_i, num_classes, depth):
  proj = z.shape[0]
  internal = 2 ** depth - 1
  total = 2 * internal + 1
  x_ = (z @ x.T) / proj                            # [d, B]
  w_, v_ = w[0:num_classes], v[0:num_classes]
  node_prob = [1.0]
  score = node_prob[0] * ((w_ @ x_) * np.tanh(sigma * (v_ @ x_)))
  for i in range(1, total):
    w_ = w[i * num_classes:(i + 1) * num_classes]
    v_ = v[i * num_classes:(i + 1) * num_classes]
    t_ = t[int(np.ceil(i / 2.0) - 1.0)].reshape(1, proj)
    prob = (1 + ((-1) ** (i + 1)) * np.tanh(sigma_i * (t_ @ x_))) / 2.0
    prob = node_prob[int(np.ceil(i / 2.0) - 1.0)] * prob
    node_prob.append(prob)
    score = score + node_prob[i] * ((w_ @ x_) * np.tanh(sigma * (v_ @ x_)))
  return score.T                                   # [B, L]


@pytest.mark.parametrize('depth,sigma,sigma_i', [(0, 1.0, 1.0), (1, 2.0, 3.0),
                                                 (2, 0.7, 0.5),
                                                 (2, 1.0, None)])
def test_bonsai_matches_edgeml_equation(depth, sigma, sigma_i):
  num_classes, proj = 3, 4
  model = get_model('bonsai', num_classes, projection_dim=proj, depth=depth,
                    sigma=sigma)
  x = np.random.default_rng(2).normal(size=(6, 5)).astype(np.float32)
  v = _randomize(model.init(jax.random.key(0), x), 3)
  p = _np(v['params'])
  # EdgeML feeds features with an appended constant 1 (append_bias=True).
  xb = np.concatenate([x, np.ones((6, 1))], axis=1).astype(np.float64)
  want = bonsai_numpy(xb, p['Z'], p['W'], p['V'], p['T'], sigma,
                      bonsai_lib.SIGMA_I_EVAL if sigma_i is None else sigma_i,
                      num_classes, depth)
  kwargs = {} if sigma_i is None else {'sigma_i': sigma_i}
  np.testing.assert_allclose(model.apply(v, x, **kwargs), want, **TOL)


# --- FastRNN / FastGRNN: EdgeML pytorch/edgeml_pytorch/graph/rnn.py ---------

def fast_numpy(cell, xs, p, w_rank, u_rank):
  c = p['cell']
  w = c['W'] if w_rank is None else c['W1'] @ c['W2']
  u = c['U'] if u_rank is None else c['U1'] @ c['U2']
  h = np.zeros((xs.shape[0], u.shape[0]))
  for t in range(xs.shape[1]):
    pre = xs[:, t] @ w + h @ u
    if cell == 'fastrnn':
      c_t = np.tanh(pre + c['bias_update'])
      h = _sigmoid(c['beta']) * h + _sigmoid(c['alpha']) * c_t
    else:
      z = _sigmoid(pre + c['bias_gate'])
      c_t = np.tanh(pre + c['bias_update'])
      h = z * h + (_sigmoid(c['zeta']) * (1.0 - z) + _sigmoid(c['nu'])) * c_t
  return h @ p['classifier']['kernel'] + p['classifier']['bias']


@pytest.mark.parametrize('cell', ['fastrnn', 'fastgrnn'])
@pytest.mark.parametrize('w_rank,u_rank', [(None, None), (2, 3)])
def test_fast_cells_match_edgeml_equations(cell, w_rank, u_rank):
  model = get_model(cell, 4, hidden_size=5, w_rank=w_rank, u_rank=u_rank)
  xs = np.random.default_rng(4).normal(size=(3, 12, 6)).astype(np.float32)
  v = _randomize(model.init(jax.random.key(0), xs), 5)
  want = fast_numpy(cell, xs.astype(np.float64), _np(v['params']), w_rank,
                    u_rank)
  np.testing.assert_allclose(model.apply(v, xs), want, **TOL)


def test_fast_cells_edgeml_initial_gate_values():
  for cell, names in (('fastrnn', {'alpha': -3.0, 'beta': 3.0}),
                      ('fastgrnn', {'zeta': 1.0, 'nu': -4.0})):
    v = get_model(cell, 3).init(jax.random.key(0), jnp.zeros((1, 4, 6)))
    for name, val in names.items():
      assert float(v['params']['cell'][name]) == val
    np.testing.assert_array_equal(v['params']['cell']['bias_update'], 1.0)


# --- Hard thresholding: EdgeML utils.hardThreshold --------------------------

def hard_threshold_numpy(a, s):
  a_ = np.copy(a).ravel()
  th = np.percentile(np.abs(a_), (1 - s) * 100.0, method='higher')
  a_[np.abs(a_) < th] = 0.0
  return a_.reshape(a.shape)


@pytest.mark.parametrize('shape,density', [((7, 9), 0.3), ((40,), 0.05),
                                           ((5, 5), 0.999), ((3, 4), 1.0)])
def test_hard_threshold_matches_edgeml(shape, density):
  a = np.random.default_rng(6).normal(size=shape).astype(np.float32)
  got = jax.jit(sparsity.hard_threshold, static_argnums=1)(a, density)
  np.testing.assert_array_equal(got, hard_threshold_numpy(a, density))
