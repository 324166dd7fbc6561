"""Deployed (int8 LiteRT) robustness next to float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust import deployed
from tinyrobust import models

pytest.importorskip('ai_edge_litert')


def _exact_model():
  """A linear model whose logits are 4 * one-hot inputs: every quantisation
  step is far smaller than the margins, so int8 keeps float32's argmax."""
  model = models.get_model('mlp', 4, hidden=(), input_shape=(4,))
  v = model.init(jax.random.key(0), jnp.zeros((1, 4)))
  v = jax.tree.map(np.asarray, v)
  v['params']['Dense_0']['kernel'] = 4.0 * np.eye(4, dtype=np.float32)
  v['params']['Dense_0']['bias'] = np.zeros(4, np.float32)
  x = np.eye(4, dtype=np.float32)[np.arange(24) % 4]
  y = (np.arange(24) % 4).astype(np.int32)
  y[:3] = (y[:3] + 1) % 4  # three clean errors
  return model, v, x, y


def test_integer_exact_model_gives_float32_predictions():
  model, v, x, y = _exact_model()
  res = deployed.evaluate_deployed(model, v, (x, y), x_train=x,
                                   attacks=['fgsm', 'pgd'],
                                   eps_grid=[0.0, 0.2], batch_size=8,
                                   pgd_steps=3, clip=(0.0, 1.0))
  f32, q = res['precisions']['float32'], res['precisions']['int8-litert']
  for name in ('fgsm', 'pgd'):
    assert q[name]['agreement_clean'] == 1.0
    assert q[name]['clean_accuracy'] == f32[name]['clean_accuracy'] == 21 / 24
    for a, b in zip(q[name]['per_eps'], f32[name]['per_eps']):
      assert a['agreement_adversarial'] == 1.0
      assert a['robust_accuracy'] == b['robust_accuracy']
      assert a['consistency'] == b['consistency']
  assert f32['fgsm']['per_eps'][0]['robust_accuracy'] == 21 / 24  # eps = 0


def test_bad_precision_is_named_before_any_work():
  model, v, x, y = _exact_model()
  with pytest.raises(ValueError, match="'int4'"):
    deployed.evaluate_deployed(model, v, (x, y), x_train=x, eps_grid=[0.1],
                               precisions=['float32', 'int4'])
