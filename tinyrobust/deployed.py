"""Robustness of the model the MCU runs: the int8 TFLite flatbuffer.

`evaluate_deployed` crafts adversarial examples on the float32 JAX model
(white-box, the attacks of `tinyrobust.evaluate`) and runs the clean and
adversarial inputs through the full-integer int8 flatbuffer that
`tinyrobust.hardware.export_tflite` produces (calibrated on the same
`hardware.representative` training inputs as `--mode=profile`), in the
LiteRT interpreter with the model's input quantisation. This is the
transfer threat model: the attacker knows the float model, the device runs
its int8 conversion.

Per precision (`float32`, `int8-litert`), attack and eps, with the same
definitions and denominator (all evaluated examples) as the evaluator:

* `clean_accuracy`: pred(x) == y;
* `robust_accuracy`: pred(x_adv) == y (and clean correct for that model);
* `consistency`: pred(x_adv) == pred(x) (the study's "adversarial accuracy");
* for int8, `agreement_clean` / `agreement_adversarial`: top-1 of int8
  equals top-1 of float32 on x / on x_adv.

Not here yet: a white-box attack on a fake-quantised JAX model
(`int8-fakequant`) and the LiteRT-vs-TFLite-Micro check on a sample.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import numpy as np

from tinyrobust import evaluate

PRECISIONS = ('float32', 'int8-litert')


def check_precisions(precisions: Sequence[str]) -> tuple[str, ...]:
  if isinstance(precisions, str) or not precisions:
    raise ValueError(f'precisions must be a non-empty list of '
                     f'{PRECISIONS}, got {precisions!r}.')
  bad = [p for p in precisions if p not in PRECISIONS]
  if bad:
    raise ValueError(f'Unknown precision(s) {bad}. Valid: '
                     f'{", ".join(PRECISIONS)} (int8-fakequant is not '
                     'implemented yet).')
  return tuple(precisions)


def craft(apply_fn, variables, kernels: Mapping[str, Any], x: np.ndarray,
          y: np.ndarray, grid: np.ndarray, *, batch_size: int, seed: int
          ) -> dict[str, np.ndarray]:
  """Adversarial inputs `[E, N, ...]` per attack, crafted on `apply_fn`."""
  out = {}
  for a, (name, attack) in enumerate(kernels.items()):
    kernel = getattr(attack, 'kernel', attack)
    fn = jax.jit(jax.vmap(kernel, in_axes=(None, None, None, None, 0)))
    parts = []
    for i in range(0, len(x), batch_size):
      key = jax.random.fold_in(jax.random.key(seed), a * 100003 + i)
      parts.append(np.asarray(fn(variables, x[i:i + batch_size],
                                 y[i:i + batch_size], key,
                                 np.asarray(grid, np.float32))))
    out[name] = np.concatenate(parts, axis=1)
  return out


def _metrics(pred_clean, pred_adv, y, ref_clean=None, ref_adv=None):
  n = len(y)
  clean = pred_clean == y
  rows = []
  for e in range(pred_adv.shape[0]):
    r = {'robust_accuracy': float(np.sum(clean & (pred_adv[e] == y)) / n),
         'consistency': float(np.mean(pred_adv[e] == pred_clean))}
    if ref_adv is not None:
      r['agreement_adversarial'] = float(np.mean(pred_adv[e] == ref_adv[e]))
    rows.append(r)
  out = {'clean_accuracy': float(np.mean(clean)), 'per_eps': rows}
  if ref_clean is not None:
    out['agreement_clean'] = float(np.mean(pred_clean == ref_clean))
  return out


def evaluate_deployed(model, variables, dataset, *, x_train: np.ndarray,
                      attacks: Sequence[str] = ('fgsm', 'pgd'),
                      eps_grid: Sequence[float], batch_size: int = 256,
                      seed: int = 0, max_examples: int | None = None,
                      clip: Any = 'dataset',
                      precisions: Sequence[str] = PRECISIONS,
                      **attack_settings) -> dict[str, Any]:
  """float32 vs int8 (LiteRT) robustness under float32-crafted attacks.

  Args:
    model, variables: a zoo (Flax) model and its trained variables.
    dataset: the evaluation split (`Dataset` or `(x, y)`).
    x_train: training inputs; `hardware.representative` calibrates int8.
    attacks, eps_grid, batch_size, seed, max_examples, clip,
      **attack_settings: as `evaluate.evaluate_robustness`.
    precisions: which of `PRECISIONS` to report.

  Returns:
    `{'precisions': {p: metrics}, 'eps_grid', 'attacks', 'num_examples',
    'protocol'}` (metrics as the module doc, per attack for each eps).
  """
  from tinyrobust import hardware  # pylint: disable=g-import-not-at-top
  from tinyrobust.hardware import export  # pylint: disable=g-import-not-at-top
  precisions = check_precisions(precisions)
  apply_fn = lambda v, x: model.apply(v, x, train=False)
  x, y, _, grid, clip = evaluate.check_eval_inputs(
      apply_fn, variables, dataset, eps_grid=eps_grid, batch_size=batch_size,
      seed=seed, max_examples=max_examples, clip=clip)
  kernels = evaluate.build_attacks(apply_fn, attacks, clip=clip,
                                   **attack_settings)
  bs = min(int(batch_size), len(x))
  adv = craft(apply_fn, variables, kernels, x, y, grid, batch_size=bs,
              seed=seed)
  f32 = lambda a: np.asarray(jax.jit(apply_fn)(variables, a)).argmax(-1)
  ref_clean = f32(x)
  ref_adv = {n: np.stack([f32(a) for a in v]) for n, v in adv.items()}
  out = {'float32': {n: _metrics(ref_clean, ref_adv[n], y) for n in adv}}
  if 'int8-litert' in precisions:
    flat = export.export_tflite(
        model, variables, x.shape[1:], quantize='int8',
        representative_data=hardware.representative(x_train))
    q = lambda a: export.run_litert(flat, a).argmax(-1)
    q_clean = q(x)
    out['int8-litert'] = {
        n: _metrics(q_clean, np.stack([q(a) for a in v]), y, ref_clean,
                    ref_adv[n]) for n, v in adv.items()}
  return {
      'precisions': {p: out[p] for p in precisions},
      'eps_grid': [float(e) for e in grid], 'attacks': list(adv),
      'num_examples': int(len(y)), 'clip': None if clip is None else
      [np.asarray(c).tolist() for c in clip],
      'protocol': ('adversarial examples crafted on the float32 JAX model '
                   '(white-box) and run unchanged through each precision; '
                   'int8 = full-integer TFLite flatbuffer in LiteRT, '
                   'calibrated on hardware.representative(x_train); '
                   'denominators: all evaluated examples'),
  }
