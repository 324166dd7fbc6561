"""TinyML zoo: sizes, shapes, gradients, jit/vmap FGSM, training hooks."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tinyrobust.models import conventions
from tinyrobust.models import bonsai as bonsai_lib
from tinyrobust.models import get_model
from tinyrobust.models import tcn as tcn_lib

# name, num_classes, kwargs, tiny per-example input shape for fast tests.
ZOO = [
    ('protonn', 9, {}, (10,)),
    ('bonsai', 9, {'depth': 2}, (10,)),
    ('fastrnn', 9, {}, (16, 6)),
    ('fastgrnn', 9, {'w_rank': 3}, (16, 6)),
    ('tcn', 9, {'nb_filters': 4, 'dilations': (1, 2)}, (12, 6)),
    ('dscnn', 12, {}, (49, 10)),
    ('resnet8', 10, {}, (32, 32, 3)),
    ('mcunet-256kb', 10, {}, (32, 32, 3)),
]


def _count(name, num_classes, shape, **kw):
  model = get_model(name, num_classes, **kw)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1,) + shape))
  n = lambda t: sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(t))
  return n(shapes['params']), n(shapes)


@pytest.mark.parametrize('name,num_classes,shape,reference', [
    ('resnet8', 10, (32, 32, 3), 78_700),   # MLPerf Tiny IC, ~78.7k
    ('dscnn', 12, (49, 10), 24_900),        # MLPerf Tiny KWS, ~24.9k
])
def test_mlperf_tiny_param_counts_within_2_percent(name, num_classes, shape,
                                                   reference):
  # MLPerf's Keras counts include BN moving mean/variance.
  _, with_stats = _count(name, num_classes, shape)
  assert abs(with_stats - reference) / reference < 0.02
  assert with_stats == {'resnet8': 78_666, 'dscnn': 24_908}[name]


@pytest.mark.parametrize('name,num_classes,shape,kwargs,expected', [
    ('protonn', 9, (10,), {}, 610),
    ('bonsai', 9, (10,), {}, 660),
    ('fastrnn', 9, (550, 6), {}, 143),
    ('fastgrnn', 9, (550, 6), {}, 281),
    ('mcunet-320kb', 10, (32, 32, 3), {}, 578_018),
    ('mcunet-256kb', 10, (32, 32, 3), {}, 570_002),
    ('mcunet', 10, (32, 32, 3), {'config': 'mcunet-256kb'}, 570_002),
])
def test_documented_param_counts(name, num_classes, shape, kwargs, expected):
  params, _ = _count(name, num_classes, shape, **kwargs)
  assert params == expected
  if name.startswith('mcunet'):  # SPEC table: 0.57M (320 kB), 0.56M (256 kB)
    ref = 570_000 if expected == 578_018 else 560_000
    assert abs(params - ref) / ref < 0.02


def test_tcn_receptive_field_is_causal_and_matches_keras_formula():
  model = get_model('tcn', 3, nb_filters=4, kernel_size=3, dilations=(1, 2),
                    nb_stacks=2)
  rf = model.receptive_field
  assert rf == tcn_lib.receptive_field(3, 2, (1, 2)) == 1 + 2 * 2 * 2 * 3
  t = rf + 5
  x = jax.random.normal(jax.random.key(0), (1, t, 2))
  xs = jnp.concatenate([x, x.at[0, t - rf].add(3.0),
                        x.at[0, t - rf - 1].add(3.0)])
  base, inside, outside = jax.jit(model.init_with_output)(
      jax.random.key(1), xs)[0]
  np.testing.assert_array_equal(outside, base)
  assert not np.allclose(inside, base)


def _fake_variables(model, x, seed=0):
  """Variables with init's shapes and fan-in-scaled random values.

  XLA compiles Flax `init` of the deep CNNs slowly (~30 s of CPU for MCUNet),
  so the shape-only `eval_shape` is filled from NumPy instead.
  """
  shapes = jax.eval_shape(functools.partial(model.init, train=False),
                          jax.random.key(0), x)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = str(path[-1].key)
    if name in ('scale', 'var'):
      return jnp.ones(leaf.shape, leaf.dtype)
    if name in ('bias', 'mean'):
      return jnp.zeros(leaf.shape, leaf.dtype)
    fan_in = max(1, int(np.prod(leaf.shape[:-1])))
    return jnp.asarray(rng.normal(0, fan_in ** -0.5, leaf.shape), leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _init(name, num_classes, kwargs, shape, batch=2):
  model = get_model(name, num_classes, **kwargs)
  x = jax.random.uniform(jax.random.key(0), (batch,) + shape)
  if model.input_kind in ('features', 'sequence'):  # EdgeML params: real init
    variables = jax.jit(functools.partial(model.init, train=False))(
        jax.random.key(1), x)
  else:
    variables = _fake_variables(model, x)
  y = jnp.arange(batch) % num_classes
  return model, variables, x, y


def _loss(model, variables, x, y):
  logits = model.apply(variables, x, train=False)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()


@pytest.mark.parametrize('name,num_classes,kwargs,shape', ZOO)
def test_forward_input_grad_and_jit_vmap_fgsm(name, num_classes, kwargs,
                                               shape):
  model, variables, x, y = _init(name, num_classes, kwargs, shape)
  assert model.input_kind in conventions.INPUT_KINDS
  assert len(model.example_input_shape()) == len(shape)

  def fgsm(variables, x, y, eps):  # x + eps * sign(grad_x CE)
    grad = jax.grad(lambda xx: _loss(model, variables, xx, y))(x)
    return jax.lax.stop_gradient(x + eps * jnp.sign(grad)), grad

  @jax.jit
  def probe(variables, x, y, eps):
    x_adv, grad = jax.vmap(fgsm, in_axes=(None, None, None, 0))(
        variables, x, y, eps)
    logits = jax.vmap(lambda xa: model.apply(variables, xa, train=False))(
        x_adv)
    ce = optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.broadcast_to(y, logits.shape[:2])).sum(-1)
    return logits[0], grad[0], x_adv, ce

  eps = jnp.array([0.0, 1e-3, 1e-2])
  logits, g, x_adv, adv_loss = probe(variables, x, y, eps)
  assert logits.shape == (2, num_classes)
  assert np.all(np.isfinite(logits))
  assert g.shape == x.shape and np.all(np.isfinite(g))
  assert np.any(g != 0)
  assert x_adv.shape == (3,) + x.shape and np.all(np.isfinite(x_adv))
  np.testing.assert_array_equal(x_adv[0], x)
  np.testing.assert_allclose(jnp.abs(x_adv[1] - x).max(), 1e-3, rtol=1e-3)
  # eps = 0 reproduces the clean loss; a tiny signed-gradient step (first
  # order ascent) raises it.
  assert adv_loss[1] > adv_loss[0]


def test_train_mode_updates_batch_stats():
  name, num_classes, kwargs, shape = ZOO[5]  # dscnn: BN + dropout
  model, variables, x, _ = _init(name, num_classes, kwargs, shape, batch=4)
  assert 'batch_stats' in variables
  train_apply = jax.jit(functools.partial(
      model.apply, train=True, mutable=['batch_stats']))
  out, new = train_apply(variables, x, rngs={'dropout': jax.random.key(2)})
  assert out.shape == (4, num_classes)
  changed = jax.tree_util.tree_map(lambda a, b: bool(np.any(a != b)),
                                   variables['batch_stats'],
                                   new['batch_stats'])
  assert any(jax.tree_util.tree_leaves(changed))


def test_protonn_data_init_kmeans_prototypes_and_majority_labels():
  rng = np.random.default_rng(0)
  centers = rng.normal(0, 6, size=(3, 10))
  y = rng.integers(0, 3, size=300)
  x = (centers[y] + rng.normal(size=(300, 10))).astype(np.float32)
  model = get_model('protonn', 3, projection_dim=4, num_prototypes=6)
  apply = jax.jit(model.apply)
  v = jax.jit(model.init)(jax.random.key(0), x[:2])
  v = model.data_init(v, x, jax.random.key(1), y_train=y)
  z = np.asarray(v['params']['Z'])
  assert set(np.unique(z)) == {0.0, 1.0} and np.all(z.sum(0) == 1)
  # Before any gradient step, the k-means init already separates the blobs.
  acc = np.mean(np.argmax(apply(v, x), -1) == y)
  assert acc > 0.95
  with pytest.raises(ValueError, match='num_prototypes'):
    model.data_init(v, x[:5], jax.random.key(1))


@pytest.mark.parametrize('name,kwargs,leaves,start', [
    ('protonn', {'density_w': 0.2, 'density_b': 0.5}, {'W': 0.2, 'B': 0.5},
     0.0),
    ('bonsai', {'density_z': 0.3, 'density_w': 0.25}, {'Z': 0.3, 'W': 0.25},
     1 / 3),
    ('fastgrnn', {'density_w': 0.3, 'density_u': 0.2, 'u_rank': 2},
     {'cell/W': 0.3, 'cell/U1': 0.2, 'cell/U2': 0.2}, 1 / 3),
])
def test_project_params_hard_thresholds_in_jit(name, kwargs, leaves, start):
  shape = (8, 6) if name == 'fastgrnn' else (10,)
  model, variables, _, _ = _init(name, 4, kwargs, shape)
  project = jax.jit(model.project_params)
  params = variables['params']
  before = project(params, jnp.float32(start - 0.01)) if start else params
  jax.tree_util.tree_map(np.testing.assert_array_equal, before, params)
  after = project(params, jnp.float32(0.9))
  for path, density in leaves.items():
    get = lambda p: functools.reduce(lambda n, k: n[k], path.split('/'), p)
    w = np.asarray(get(after))
    kept = np.mean(w != 0)
    assert abs(kept - density) <= 1.0 / w.size + 1e-6, (path, kept)
    big = np.abs(np.asarray(get(params))).ravel()
    assert np.abs(w).max() == big.max()


def test_bonsai_sigma_i_schedule_anneals_and_restarts():
  sched = jax.jit(functools.partial(bonsai_lib.sigma_i_schedule, sparse=True))
  vals = [float(sched(jnp.float32(p))) for p in (0.0, 0.1, 0.3, 0.34, 0.99)]
  assert vals[0] == 1.0 and vals[1] > vals[0] and vals[2] <= 1000.0
  assert vals[3] < vals[2]  # restart of the IHT phase
  dense = get_model('bonsai', 3)
  assert float(dense.train_kwargs(jnp.float32(0.9))['sigma_i']) == 1000.0


def test_mcunet_resolution_upscales_inside_the_model():
  model = get_model('mcunet', 10, config='mcunet-320kb', resolution=48)
  x = jnp.zeros((1, 32, 32, 3))
  v = jax.eval_shape(model.init, jax.random.key(0), x)
  out = jax.eval_shape(model.apply, v, x)
  assert out.shape == (1, 10)


@pytest.mark.parametrize('name,kwargs,match', [
    ('mcunet', {'config': 'mcunet-1mb'}, 'mcunet-320kb'),
    ('tcn', {'padding': 'valid'}, 'causal'),
    ('tcn', {'dilations': ()}, 'dilations'),
    ('fastgrnn', {'w_rank': 0}, 'w_rank'),
    ('protonn', {'density_w': 0.0}, 'density_w'),
    ('bonsai', {'depth': -1}, 'depth'),
    ('resnet8', {'filters': ()}, 'filters'),
])
def test_bad_options_raise_value_error(name, kwargs, match):
  with pytest.raises(ValueError, match=match):
    get_model(name, 3, **kwargs)


def test_input_rank_and_shape_are_checked():
  model, variables, _, _ = _init('resnet8', 10, {}, (32, 32, 3))
  with pytest.raises(ValueError, match=r'\[B, H, W, C\]'):
    jax.eval_shape(model.apply, variables, jnp.zeros((2, 32, 32)))
  model = get_model('fastgrnn', 3, input_shape=(16, 6))
  assert model.example_input_shape() == (16, 6)
  with pytest.raises(ValueError, match='input_shape'):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 15, 6)))
