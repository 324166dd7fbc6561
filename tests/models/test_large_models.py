"""Large models: Keras parameter counts, training steps, attacks under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tinyrobust import attacks
from tinyrobust.models import get_model

# name -> (classes, example shape, Keras params incl. BN statistics).
COUNTS = {
    'har_cnn': (9, (550, 6), 3_036_041),
    'har_cnn_lstm': (9, (550, 6), 1_744_137),
    'har_lstm': (9, (550, 6), 201_865),
    'kws_cnn': (12, (49, 10), 94_604),
    'kws_gru': (12, (49, 10), 499_212),
    'kws_lstm': (12, (49, 10), 1_028_012),
    # de Andrade et al. on 80 mel bins (1 s at hop 128 + 1: 126 frames).
    'attention_rnn': (12, (126, 80), 200_455),
    # keras.applications bases + Dense(10), from the table.
    'efficientnet_b0': (10, (32, 32, 3), 4_070_000),
    'efficientnet_b4': (10, (32, 32, 3), 17_700_000),
    'efficientnetv2_b0': (10, (32, 32, 3), 5_930_000),
    'efficientnetv2_b3': (10, (32, 32, 3), 12_950_000),
    'resnet50': (10, (32, 32, 3), 23_620_000),
    'vgg19': (10, (32, 32, 3), 20_030_000),
}


def _count(name, classes, shape, **kw):
  m = get_model(name, classes, **kw)
  v = jax.eval_shape(lambda: m.init(jax.random.key(0),
                                    jnp.zeros((1,) + shape)))
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(v))


@pytest.mark.parametrize('name', sorted(COUNTS))
def test_parameter_count_matches_keras(name):
  classes, shape, want = COUNTS[name]
  got = _count(name, classes, shape)
  assert abs(got - want) <= 0.01 * want, (got, want)


# Reduced shapes keep the training test fast; the architecture is the same.
SMALL = {
    'har_cnn': ((64, 6), {'filters': 8}),
    'har_cnn_lstm': ((64, 6), {'filters': 8, 'units': 8}),
    'har_lstm': ((32, 6), {'units': 8}),
    'kws_cnn': ((49, 10), {'filters': 8}),
    'kws_gru': ((49, 10), {'units': 8}),
    'kws_lstm': ((49, 10), {'units': 8}),
    'attention_rnn': ((49, 40), {'units': 8}),
    'efficientnet_b0': ((32, 32, 3), {}),
}


@pytest.mark.parametrize('name', sorted(SMALL))
def test_trains_and_attacks_under_jit(name):
  shape, kw = SMALL[name]
  model = get_model(name, 3, input_shape=shape, **kw)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(8,) + shape).astype(np.float32)
  y = (np.arange(8) % 3).astype(np.int32)
  x[y == 1] += 1.0  # a learnable signal
  if len(shape) == 3:
    x = (x - x.min()) / (x.max() - x.min())  # images in [0, 1]
  # Jitted: EfficientNet's init eagerly takes a minute, jitted 40 s.
  variables = jax.jit(model.init)(jax.random.key(0), x[:1])
  params, state = variables['params'], {k: v for k, v in variables.items()
                                        if k != 'params'}
  tx = optax.adam(1e-2)
  opt = tx.init(params)

  @jax.jit
  def step(params, state, opt, key):
    def loss_fn(p):
      logits, new = model.apply({'params': p, **state}, x, train=True,
                                rngs={'dropout': key}, mutable=list(state))
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, y).mean(), new
    (loss, new), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
    upd, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, upd), dict(new), opt, loss

  losses = []
  for i in range(8):
    params, state, opt, loss = step(params, state, opt, jax.random.key(i))
    losses.append(float(loss))
  assert np.isfinite(losses).all() and losses[-1] < losses[0], losses
  v = {'params': params, **state}
  apply = lambda v, x: model.apply(v, x, train=False)
  makes = [attacks.make_fgsm, lambda f: attacks.make_pgd(f, steps=3)]
  # EfficientNet's compile dominates CI: its input gradient under jit is
  # FGSM; PGD's loop is covered by the smaller models.
  for make in makes[:1] if name.startswith('efficientnet') else makes:
    x_adv = jax.jit(make(apply))(v, jnp.asarray(x), jnp.asarray(y),
                                 jax.random.key(1), 0.1)
    assert x_adv.shape == x.shape and np.isfinite(np.asarray(x_adv)).all()
    assert float(jnp.max(jnp.abs(x_adv - x))) <= 0.1 + 1e-6
    assert float(jnp.max(jnp.abs(x_adv - x))) > 0.0
