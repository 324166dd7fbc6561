"""Routes to one deployed model, per example, and their worst case.

A route is one way an attacker reaches the model the device runs (an int8
flatbuffer in LiteRT): examples crafted white-box on a surrogate and
transferred (from the float model it was exported from, from its
fake-quantised twin, from another model of the same task), or a score-based
attack that queries the flatbuffer itself (`square_on_scores`: Square driven
on the interpreter's outputs). Every route is evaluated on the SAME model,
examples and eps grid, so per example the model is robust at eps only if it
is robust under every route: `worst_case` reports that minimum over routes
per example, with each route's own number beside it (a worst case that is
never above any route's number, and usually below all of them, because
different routes break different examples).

The one metric definition is the evaluator's (`summary.outcomes`: robust =
clean correct and correct on x_adv, non-finite logits or inputs never
correct; consistency = same prediction on x_adv as on x).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from tinyrobust import attacks as attacks_lib
from tinyrobust.evaluation import summary

# Square's key for eps index e and batch b: fold_in(fold_in(key(seed) ,
# SQUARE_STREAM), e), b): its own stream, so it never reuses the white-box
# evaluator's keys (which fold the attack index first).
SQUARE_STREAM = 7919


def outcomes(y, clean_logits, adv_logits, adv_inputs=None
             ) -> dict[str, np.ndarray]:
  """Per-example outcomes of one route on the attacked model.

  Args:
    y: labels `[N]`.
    clean_logits: the model's outputs on x, `[N, K]`.
    adv_logits: its outputs on the route's x_adv, `[E, N, K]`.
    adv_inputs: the route's x_adv `[E, N, ...]` (a non-finite one is never
      correct), or None.

  Returns:
    Booleans `{'clean' [N], 'robust' [E, N], 'consistent' [E, N],
    'nonfinite' [E, N]}` (`summary.outcomes`).
  """
  clean_logits, adv_logits = np.asarray(clean_logits), np.asarray(adv_logits)
  adv_fin = np.asarray(summary.finite_rows(adv_logits, 2))
  if adv_inputs is not None:
    adv_fin = adv_fin & np.asarray(summary.finite_rows(adv_inputs, 2))
  o = summary.outcomes(np.asarray(y), clean_logits.argmax(-1),
                       np.asarray(summary.finite_rows(clean_logits, 1)),
                       adv_logits.argmax(-1), adv_fin)
  return {k: np.asarray(v) for k, v in o.items()} | {'nonfinite': ~adv_fin}


def predictor_outcomes(logits_fn: Callable[[np.ndarray], np.ndarray], y, x,
                       x_adv) -> dict[str, np.ndarray]:
  """`outcomes` of a host predictor (e.g. LiteRT's int8 logits, `[M, ...]
  -> [M, K]`) on x `[N, ...]` and x_adv `[E, N, ...]`, plus 'transferred'
  `[E, N]` (clean correct and wrong on x_adv)."""
  clean = np.asarray(logits_fn(np.asarray(x)))
  adv = np.stack([np.asarray(logits_fn(np.asarray(a))) for a in x_adv])
  o = outcomes(y, clean, adv, x_adv)
  o['transferred'] = o['clean'] & ~o['robust']
  return o


def rates(o: Mapping[str, np.ndarray], eps_grid: Sequence[float]
          ) -> dict[str, Any]:
  """Rates of one route's `outcomes` (denominator: all N examples)."""
  n = len(o['clean'])
  return {'clean_correct': int(o['clean'].sum()),
          'clean_accuracy': float(o['clean'].sum()) / n,
          'per_eps': summary.per_eps_rates(
              eps_grid, o['robust'].sum(axis=1), o['consistent'].sum(axis=1),
              o['nonfinite'].sum(axis=1), n)}


def worst_case(routes: Mapping[str, Mapping[str, np.ndarray]],
               eps_grid: Sequence[float]) -> dict[str, Any]:
  """The minimum over routes, per example, with each route's number.

  Args:
    routes: route name -> its `outcomes` on the same model and examples.
    eps_grid: the `E` radii.

  Returns:
    `{'routes': [names], 'clean_accuracy', 'clean_correct', 'per_eps':
    [{eps, robust_correct, robust_accuracy, consistent, consistency,
    'by_route': {name: robust_accuracy}, 'only_route': {name: examples
    only that route breaks}}], 'examples': {'worst': robust [E][N],
    'routes': {name: robust [E][N]}}}` (per-example booleans as lists,
    JSON-able).

  Raises:
    ValueError: no route, or routes of different examples or clean outcomes
      (they must evaluate one model on the same x).
  """
  if not routes:
    raise ValueError('worst_case needs at least one route, got none.')
  names = list(routes)
  first = routes[names[0]]
  for name in names[1:]:
    o = routes[name]
    if o['robust'].shape != first['robust'].shape or not np.array_equal(
        o['clean'], first['clean']):
      raise ValueError(
          f'Route {name!r} does not evaluate the same model on the same '
          f'examples as {names[0]!r} (shapes {o["robust"].shape} vs '
          f'{first["robust"].shape} or different clean outcomes).')
  robust = np.stack([np.asarray(routes[r]['robust'], bool)
                     for r in names])  # [R, E, N]
  consistent = np.stack([routes[r]['consistent'] for r in names])
  nonfinite = np.stack([routes[r]['nonfinite'] for r in names])
  all_robust, all_consistent = robust.all(0), consistent.all(0)
  n = robust.shape[-1]
  per_eps = summary.per_eps_rates(eps_grid, all_robust.sum(1),
                                  all_consistent.sum(1),
                                  nonfinite.any(0).sum(1), n)
  for e, row in enumerate(per_eps):
    row['by_route'] = {r: float(robust[i, e].sum()) / n
                       for i, r in enumerate(names)}
    others = [np.delete(robust[:, e], i, axis=0).all(0) if len(names) > 1
              else np.ones(n, bool) for i in range(len(names))]
    row['only_route'] = {r: int((~robust[i, e] & others[i] &
                                 first['clean']).sum())
                         for i, r in enumerate(names)}
  return {'routes': names, 'clean_correct': int(first['clean'].sum()),
          'clean_accuracy': float(first['clean'].sum()) / n,
          'per_eps': per_eps,
          'examples': {'worst': all_robust.tolist(),
                       'routes': {r: robust[i].tolist()
                                  for i, r in enumerate(names)}}}


def square_on_scores(score_fn: Callable[[np.ndarray], np.ndarray],
                     x: np.ndarray, y: np.ndarray, eps_grid: Sequence[float],
                     *, seed: int, batch_size: int, clip: Any = None,
                     norm: str = 'linf', eps_scale: Any = None,
                     **square_options) -> np.ndarray:
  """Square (`make_square(host=True)`) driven on a host scoring function.

  The one Square-on-LiteRT driver: `evaluate_tflite` and `evaluate_deployed`
  both call it, so for the same flatbuffer, examples, seed and settings
  they craft the same x_adv.

  Args:
    score_fn: `x [B, ...] (float NumPy) -> logits or scores [B, K]`, e.g. a
      `hardware.litert.LiteRT` runner (dequantised int8 outputs).
    x, y: examples `[N, ...]` and labels `[N]`.
    eps_grid: the `E` radii; each eps is searched from x independently
      (eps 0: x_adv = x, without queries).
    seed: batch `b` at eps index `e` uses key
      `fold_in(fold_in(fold_in(key(seed), SQUARE_STREAM), e), b)`.
    batch_size: examples per search (keys depend on it).
    clip, norm, eps_scale, **square_options: as `make_square` (queries,
      p_init, loss; `host`/`loop`/`chunk` do not apply here).

  Returns:
    x_adv `[E, N, ...]` (float32).
  """
  for k in ('host', 'loop', 'chunk', 'return_info'):
    square_options.pop(k, None)
  attack = attacks_lib.get_attack(
      'square', lambda _, xb: score_fn(np.asarray(xb)), norm=norm, clip=clip,
      eps_scale=eps_scale, host=True, **square_options)
  x = np.asarray(x, np.float32)
  y = np.asarray(y)
  base = jax.random.fold_in(jax.random.key(int(seed)), SQUARE_STREAM)
  out = np.empty((len(eps_grid),) + x.shape, np.float32)
  for e, eps in enumerate(eps_grid):
    if float(eps) == 0.0:  # nothing to search: Square returns x itself
      out[e] = x
      continue
    key_e = jax.random.fold_in(base, e)
    for b, i in enumerate(range(0, len(x), int(batch_size))):
      sl = slice(i, i + int(batch_size))
      out[e, sl] = np.asarray(attack(None, x[sl], y[sl],
                                     jax.random.fold_in(key_e, b),
                                     float(eps)))
  return out


def square_settings(config: Mapping[str, Any]) -> dict[str, Any]:
  """`square_on_scores` settings from a built Square's `Attack.config`
  (norm, queries, p_init, loss, clip, eps_scale; the loop options dropped),
  so the LiteRT search uses the attack section's Square settings."""
  keep = ('norm', 'queries', 'p_init', 'loss', 'clip', 'eps_scale')
  return {k: config[k] for k in keep if k in config}


def format_worst_case(wc: Mapping[str, Any]) -> list[str]:
  """Printed lines: per eps the worst case and each route's number."""
  lines = [f'worst case over {len(wc["routes"])} route(s) per example '
           f'(clean {wc["clean_accuracy"]:.4f}):']
  for row in wc['per_eps']:
    routes_txt = ' '.join(f'{r}={a:.4f}' for r, a in row['by_route'].items())
    only = ' '.join(f'{r}={k}' for r, k in row['only_route'].items())
    lines.append(f'  eps={row["eps"]:.4g} worst={row["robust_accuracy"]:.4f}'
                 f' | {routes_txt} | broken by this route only: {only}')
  return lines
