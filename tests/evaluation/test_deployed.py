"""Deployed (int8) robustness: LiteRT and the fake-quantised model next to
float32, on the same examples. (Fake-quant against LiteRT and an integer
closed form: tests/hardware/test_fakequant.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust import evaluation
from tinyrobust import models
from tinyrobust.evaluation import deployed

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
                                   pgd_steps=3, clip=(0.0, 1.0),
                                   tflm_samples=4)
  ev = res['evaluations']
  assert set(ev) == {'float32->float32', 'float32->int8-litert',
                     'int8-fakequant->int8-fakequant',
                     'int8-fakequant->int8-litert'}
  f32 = ev['float32->float32']
  for key in ('float32->int8-litert', 'int8-fakequant->int8-fakequant',
              'int8-fakequant->int8-litert'):
    for name in ('fgsm', 'pgd'):
      q = ev[key][name]
      assert q['agreement_clean'] == 1.0
      assert q['clean_accuracy'] == f32[name]['clean_accuracy'] == 21 / 24
      for a, b in zip(q['per_eps'], f32[name]['per_eps']):
        assert a['agreement_adversarial'] == 1.0
        assert a['robust_accuracy'] == b['robust_accuracy']
        assert a['consistency'] == b['consistency']
  assert f32['fgsm']['per_eps'][0]['robust_accuracy'] == 21 / 24  # eps = 0
  assert res['fakequant']['agreement_litert_clean'] == 1.0
  # TFLite Micro runs the same int8 graph bit-exactly.
  assert res['tflm_check']['ran'] and res['tflm_check']['equal']
  assert res['tflm_check']['samples'] == 4 * 3
  rows = res['rows']
  assert len(rows) == 4 * 2 * 2  # evaluations x attacks x eps
  assert {(r['crafted_on'], r['precision']) for r in rows} == {
      tuple(k.split('->')) for k in ev}


@pytest.mark.parametrize('bad, needle', [
    (np.zeros((24, 5), np.float32), r'x_train has shape \[24, 5\]; it must '
     r'be \[N, 4\]'),
    (np.zeros((24, 4, 1), np.float32), r'\[24, 4, 1\].*\[N, 4\]'),
    (np.zeros((0, 4), np.float32), 'x_train is empty'),
    (np.full((24, 4), np.nan, np.float32), 'x_train contains 96 NaN'),
    ([['a'] * 4] * 3, 'x_train must be a numeric array')])
def test_bad_x_train_is_named_before_the_int8_export(bad, needle,
                                                     monkeypatch):
  model, v, x, y = _exact_model()

  def no_export(*args, **kwargs):
    raise AssertionError('exported before x_train was checked')

  monkeypatch.setattr(deployed.hardware, 'export_tflite', no_export)
  with pytest.raises(ValueError, match=needle):
    deployed.evaluate_deployed(model, v, (x, y), x_train=bad,
                               eps_grid=[0.1], attacks=['fgsm'])


def test_bad_precision_is_named_before_any_work():
  model, v, x, y = _exact_model()
  with pytest.raises(ValueError, match="'int4'"):
    deployed.evaluate_deployed(model, v, (x, y), x_train=x, eps_grid=[0.1],
                               precisions=['float32', 'int4'])


def test_nonfinite_int8_outputs_follow_the_float_evaluators_rule():
  """Non-finite outputs or adversarial inputs are never correct nor
  consistent, in the int8 counting exactly as in the float evaluator.

  Example i's input is the number i; the 'attack' moves it to i + 1000 * eps
  (example 3's x_adv at eps 0.5 is NaN), and the model looks the logits up
  in a table, so both paths see the same outputs.
  """
  n, k, grid = 8, 3, [0.0, 0.5]
  y = (np.arange(n) % k).astype(np.int32)
  table = np.zeros((n + 500, k), np.float32)
  table[np.arange(n), y] = 1.0         # clean: all correct ...
  table[0] = [np.nan, 0.0, 0.0]        # ... but 0's argmax is NaN's 0 == y
  table[500 + np.arange(n), y] = 1.0   # eps 0.5: correct ...
  table[500 + 1] = [np.inf, 0.0, 0.0]  # ... except an inf logit,
  table[500 + 2] = [1.0, 0.0, 0.0]     # a real error (y = 2)
  x = np.arange(n, dtype=np.float32)[:, None]

  def apply_fn(v, x):
    idx = jnp.clip(jnp.nan_to_num(x[:, 0]), 0, n + 499).astype(jnp.int32)
    return jnp.asarray(table)[idx] * v

  def shift(v, x, y, key, eps):
    del v, y, key
    return jnp.where((x == 3) & (eps > 0), jnp.nan, x + 1000 * eps)

  shift.kind, shift.config = 'shift', {}
  run = evaluation.robustness_run(apply_fn, 1.0, (x, y),
                                  attacks={'shift': shift}, eps_grid=grid,
                                  batch_size=8, seed=0, sanity_checks=False)
  want = run.results['attacks']['shift']
  x_adv = np.stack([np.asarray(shift(1.0, x, y, None, e)) for e in grid])
  got = deployed.metrics(
      apply_fn(1.0, x), np.stack([apply_fn(1.0, a) for a in x_adv]), y, grid,
      adv_inputs_finite=np.isfinite(x_adv).all(axis=-1))
  assert got['clean_correct'] == want['clean_correct'] == n - 1
  assert got['clean_nonfinite'] == want['clean_nonfinite'] == 1
  for p, q in zip(got['per_eps'], want['per_eps']):
    for key in ('robust_correct', 'consistent', 'robust_accuracy',
                'consistency'):
      assert p[key] == q[key], (key, p, q)
  # eps 0.5: examples 0 (clean NaN), 1 (inf), 2 (error), 3 (NaN input) out.
  assert got['per_eps'][1]['robust_correct'] == n - 4
  assert got['per_eps'][1]['consistent'] == n - 4
  assert got['per_eps'][1]['adv_nonfinite'] == want['per_eps'][1][
      'adv_nonfinite'] == 2  # 1 and 3
  assert got['per_eps'][0]['robust_correct'] == n - 1  # eps 0: clean
