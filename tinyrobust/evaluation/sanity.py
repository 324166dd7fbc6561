"""Sanity checks reported with every robustness evaluation.

After AutoAttack (Croce and Hein, 2020) and Carlini et al., "On evaluating
adversarial robustness" (2019). Each check returns flags (dicts with a
`type`) that the evaluator adds to its results:

* `nondeterministic_forward`: two forward passes on the same inputs differ
  (random dropout left on, host randomness): attacks then aim at a moving
  target and robustness is overestimated.
* `softmax_outputs`: the outputs are probabilities (rows in [0, 1] summing to
  1), not logits: cross-entropy on them saturates and gradients vanish.
* `zero_gradients`: the loss gradient w.r.t. the input is exactly zero for
  most examples at the start point (a rounding input quantiser, a hard
  gate): gradient attacks cannot move and look like a defence.
* `attack_weaker_than_noise`: random noise of the same norm and eps breaks
  more examples than an attack (`noise_baseline`).
* `blackbox_stronger_than_whitebox`: a score-based attack (Square) breaks
  more examples than a gradient attack at the same eps: gradient masking.
* `robust_at_large_eps`: at an eps spanning the whole input range a
  gradient attack still leaves many examples robust.

`sanity_flags` adds the flags read from the counts alone: non-finite logits
or adversarial inputs, robust accuracy rising with eps, an iterative attack
weaker than FGSM at the same norm and eps, and clean counts that differ
between attacks. `tinyrobust.evaluation.summary.summarize` collects them all.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from tinyrobust import attacks

CHECK_EXAMPLES = 64          # examples the model checks run on
ZERO_GRAD_FRACTION = 0.5     # flag when more examples than this have 0 grad
LARGE_EPS_ROBUST = 0.05      # robust accuracy allowed at a range-wide eps
BLACKBOX = ('square',)       # score-based attacks (no gradients)


def model_checks(apply_fn: Callable, variables: Any, x: np.ndarray,
                 y: np.ndarray) -> list[dict[str, Any]]:
  """Determinism, logits-not-probabilities and zero-gradient checks."""
  x = jnp.asarray(x[:CHECK_EXAMPLES])
  y = jnp.asarray(y[:CHECK_EXAMPLES])
  flags = []
  a = np.asarray(apply_fn(variables, x))
  b = np.asarray(apply_fn(variables, x))
  if not np.array_equal(a, b, equal_nan=True):
    flags.append({'type': 'nondeterministic_forward',
                  'max_abs_difference': float(np.nanmax(np.abs(a - b)))})
  if (np.all((a >= 0) & (a <= 1)) and
      np.allclose(a.sum(-1), 1.0, atol=1e-3)):
    flags.append({'type': 'softmax_outputs',
                  'detail': 'outputs are probabilities; pass logits'})

  def loss(xi):
    logits = apply_fn(variables, xi)
    return jnp.sum(-jax.nn.log_softmax(logits)[jnp.arange(len(y)), y])

  g = np.asarray(jax.grad(loss)(x)).reshape(len(x), -1)
  zero = float(np.mean(np.all(g == 0, axis=1)))
  if zero > ZERO_GRAD_FRACTION:
    flags.append({'type': 'zero_gradients', 'fraction': zero})
  return flags


def make_noise(apply_fn: Callable, *, norm: str = 'linf', clip=None):
  """Random noise in the eps-ball (uniform in the L-inf box; a uniformly
  random direction at radius eps for L2): the baseline every attack must
  beat. Returns an `Attack` named 'noise'."""
  del apply_fn

  def kernel(variables, x, y, key, eps):
    del variables, y
    eps = jnp.reshape(jnp.asarray(eps, x.dtype),
                      jnp.shape(eps) + (1,) * (x.ndim - jnp.ndim(eps)))
    if norm == 'linf':
      d = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * eps
    else:
      d = jax.random.normal(key, x.shape, x.dtype)
      n = jnp.sqrt(jnp.sum(d * d, axis=tuple(range(1, x.ndim)),
                           keepdims=True))
      d = d / jnp.maximum(n, 1e-12) * eps
    x_adv = x + d
    if clip is not None:
      x_adv = jnp.clip(x_adv, clip[0], clip[1])
    return x_adv

  return attacks.Attack('noise', {'norm': norm,
                                  'clip': None if clip is None else
                                  [np.asarray(c).tolist() for c in clip]},
                        kernel)


def compare_flags(per_attack: Mapping[str, Any],
                  noise: Mapping[str, Any] | None) -> list[dict[str, Any]]:
  """Attack-vs-noise and black-box-vs-white-box flags at equal eps."""
  flags = []
  white = {n: r for n, r in per_attack.items() if r['kind'] not in BLACKBOX}
  black = {n: r for n, r in per_attack.items() if r['kind'] in BLACKBOX}
  for name, res in per_attack.items():
    if noise is None:
      break
    for p, q in zip(res['per_eps'], noise['per_eps']):
      if p['eps'] > 0 and q['robust_correct'] < p['robust_correct']:
        flags.append({'type': 'attack_weaker_than_noise', 'attack': name,
                      'eps': p['eps'], 'robust_accuracy': p['robust_accuracy'],
                      'noise_robust_accuracy': q['robust_accuracy']})
  for bname, bres in black.items():
    for wname, wres in white.items():
      for p, q in zip(bres['per_eps'], wres['per_eps']):
        if p['eps'] > 0 and p['robust_correct'] < q['robust_correct']:
          flags.append({'type': 'blackbox_stronger_than_whitebox',
                        'attack': wname, 'reference': bname, 'eps': p['eps'],
                        'robust_accuracy': q['robust_accuracy'],
                        'blackbox_robust_accuracy': p['robust_accuracy']})
  return flags


def large_eps_flags(name: str, robust_accuracy: float, eps: float
                    ) -> list[dict[str, Any]]:
  """`robust_at_large_eps` when a gradient attack leaves more than
  `LARGE_EPS_ROBUST` robust at an eps spanning the input range."""
  if robust_accuracy > LARGE_EPS_ROBUST:
    return [{'type': 'robust_at_large_eps', 'attack': name, 'eps': eps,
             'robust_accuracy': robust_accuracy}]
  return []


def sanity_flags(per_attack) -> list[dict]:
  """Non-finite outputs; robust accuracy rising with eps; PGD weaker than
  FGSM at the same norm and eps; clean counts that differ between attacks."""
  flags = []
  for name, res in per_attack.items():
    if res['clean_nonfinite']:
      flags.append({'type': 'nonfinite_logits', 'attack': name,
                    'count': res['clean_nonfinite']})
    for p in res['per_eps']:
      if p['adv_nonfinite']:
        flags.append({'type': 'nonfinite_adversarial', 'attack': name,
                      'eps': p['eps'], 'count': p['adv_nonfinite']})
    pts = sorted(res['per_eps'], key=lambda p: p['eps'])
    # The scheduler's counts are a worst case over eps (monotone by
    # construction); its audited raw estimate is what can rise.
    raw = lambda p: p.get('raw_robust_correct', p['robust_correct'])
    for lo, hi in zip(pts, pts[1:]):
      if hi['eps'] > lo['eps'] and raw(hi) > raw(lo):
        flags.append({
            'type': 'robust_accuracy_increases_with_eps', 'attack': name,
            'eps': hi['eps'], 'eps_lower': lo['eps'],
            'robust_accuracy': hi['robust_accuracy'],
            'robust_accuracy_at_eps_lower': lo['robust_accuracy']})
  flags += _weaker_than_fgsm(per_attack)
  clean_counts = sorted({v['clean_correct'] for v in per_attack.values()})
  if len(clean_counts) > 1:
    flags.append({'type': 'clean_accuracy_differs_between_attacks',
                  'counts': clean_counts})
  return flags


def _weaker_than_fgsm(per_attack) -> list[dict]:
  """An iterative attack weaker than the one-step FGSM (same norm, eps)."""
  flags = []
  fgsm = [n for n, r in per_attack.items() if r['kind'] == 'fgsm']
  for name, res in per_attack.items():
    if res['kind'] == 'fgsm':
      continue
    for ref in fgsm:
      if per_attack[ref]['config'].get('norm') != res['config'].get('norm'):
        continue
      by_eps = {p['eps']: p for p in per_attack[ref]['per_eps']}
      for p in res['per_eps']:
        f = by_eps.get(p['eps'])
        if f is not None and p['robust_correct'] > f['robust_correct']:
          flags.append({
              'type': f'{res["kind"]}_weaker_than_fgsm', 'attack': name,
              'reference': ref, 'eps': p['eps'],
              'robust_accuracy': p['robust_accuracy'],
              'reference_robust_accuracy': f['robust_accuracy']})
  return flags
