"""Each sanity flag fires on a model built to trigger it, and not on a
sound model; the random-noise baseline is reported with every evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust import evaluation
from tinyrobust.evaluation import sanity

RNG = np.random.default_rng(0)
W = RNG.normal(size=(16, 4)).astype(np.float32)
X = RNG.uniform(0, 1, (48, 16)).astype(np.float32)
Y = np.argmax(X @ W, -1).astype(np.int32)  # the linear model is accurate


def linear(v, x):
  return x @ v


def softmax_head(v, x):
  return jax.nn.softmax(x @ v)


def quantised_input(v, x):
  """A rounding input quantiser: zero gradient almost everywhere."""
  return (jnp.round(x * 4) / 4) @ v  # d round / dx = 0 in JAX


_calls = {'n': 0}


def dropout_forward(v, x):
  """Dropout left on, with host randomness: every call differs."""
  _calls['n'] += 1
  mask = jax.random.bernoulli(jax.random.key(_calls['n']), 0.5, x.shape)
  return (x * mask * 2) @ v


def _flags(apply_fn, attacks=('fgsm', 'pgd'), eps=(0.0, 0.05, 0.1)):
  res = evaluation.evaluate_robustness(apply_fn, jnp.asarray(W), (X, Y),
                                       attacks=list(attacks), eps_grid=eps,
                                       batch_size=16, seed=0, pgd_steps=5,
                                       clip=(0.0, 1.0))
  return {f['type'] for f in res['flags']}, res


def test_sound_model_has_no_model_flags_and_a_noise_baseline():
  flags, res = _flags(linear)
  assert not flags & {'softmax_outputs', 'zero_gradients',
                      'nondeterministic_forward'}, flags
  noise = res['noise_baseline']['per_eps']
  assert [p['eps'] for p in noise] == res['eps_grid']
  # Noise in the ball hurts less than the attacks.
  pgd = res['attacks']['pgd']['per_eps']
  assert noise[-1]['robust_correct'] >= pgd[-1]['robust_correct']


def test_softmax_outputs_flag():
  assert 'softmax_outputs' in _flags(softmax_head)[0]


def test_zero_gradient_flag():
  flags, _ = _flags(quantised_input)
  assert 'zero_gradients' in flags


def test_nondeterministic_forward_flag():
  flags = {f['type'] for f in sanity.model_checks(dropout_forward,
                                                  jnp.asarray(W), X, Y)}
  assert 'nondeterministic_forward' in flags


def test_blackbox_stronger_than_whitebox_flag():
  """With zero gradients, Square still breaks points that PGD cannot."""
  flags, res = _flags(quantised_input, attacks=('pgd', 'square'),
                      eps=(0.0, 0.2))
  sq = res['attacks']['square']['per_eps'][-1]['robust_correct']
  pg = res['attacks']['pgd']['per_eps'][-1]['robust_correct']
  assert sq < pg, (sq, pg)
  assert 'blackbox_stronger_than_whitebox' in flags


def test_attack_weaker_than_noise_flag():
  per_attack = {'pgd': {'kind': 'pgd', 'per_eps': [
      {'eps': 0.1, 'robust_correct': 30, 'robust_accuracy': 0.6}]}}
  noise = {'per_eps': [{'eps': 0.1, 'robust_correct': 20,
                        'robust_accuracy': 0.4}]}
  flags = sanity.compare_flags(per_attack, noise)
  assert [f['type'] for f in flags] == ['attack_weaker_than_noise']


@pytest.mark.parametrize('acc, fires', [(0.5, True), (0.0, False)])
def test_robust_at_large_eps_flag(acc, fires):
  assert bool(sanity.large_eps_flags('pgd', acc, 1.0)) == fires


def test_range_wide_eps_breaks_a_sound_model_and_flags_a_masked_one():
  flags, res = _flags(linear, attacks=('pgd',), eps=(0.0, 1.0))
  assert res['attacks']['pgd']['per_eps'][-1]['robust_accuracy'] <= 0.05
  assert 'robust_at_large_eps' not in flags
  assert 'robust_at_large_eps' in _flags(quantised_input, attacks=('pgd',),
                                         eps=(0.0, 1.0))[0]


def test_result_records_follow_the_schema():
  from tinyrobust import results as results_lib  # pylint: disable=g-import-not-at-top
  _, res = _flags(softmax_head)
  recs = results_lib.records(
      res, model={'name': 'linear', 'kwargs': {}, 'params': 64},
      dataset={'name': 'synthetic', 'split': 'test', 'protocol': 'p'},
      threat={'space': 'input', 'eps_units': 'unit'},
      profile={'macs': 64, 'int8': {'flash': 900, 'tflm_arena': 300}})
  assert len(recs) == 2 * 3
  assert all('softmax_outputs' in r['flags'] for r in recs)
  assert recs[0]['mcu'] == {'flash_int8_bytes': 900,
                            'sram_tflm_int8_bytes': 300, 'macs': 64}
  bad = dict(recs[0], robust_accuracy=1.5)
  with pytest.raises(ValueError, match='robust_accuracy'):
    results_lib.validate(bad)
  bad = dict(recs[0], threat_model={**recs[0]['threat_model'],
                                    'space': 'audio'})
  with pytest.raises(ValueError, match="'audio'"):
    results_lib.validate(bad)
