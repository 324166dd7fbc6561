"""Robustness of the model the MCU runs: the int8 TFLite flatbuffer.

`evaluate_deployed` compares three precisions on the same examples, eps
grid and attacks (with the evaluator's definitions and denominator: all
evaluated examples):

* `float32`: the JAX model, attacked white-box (as `robustness.py`);
* `int8-litert`: the full-integer int8 flatbuffer of
  `tinyrobust.hardware.export_tflite` (calibrated on
  `hardware.representative(x_train)`, as `--mode=profile`) in the LiteRT
  interpreter (`hardware.litert`), batched, with the model's input
  quantisation. It sees the adversarial examples crafted on float32
  (transfer: the attacker knows the float model, the device runs its int8
  conversion) and, when `int8-fakequant` is asked for too, those crafted on
  the fake-quantised model;
* `int8-fakequant`: `tinyrobust.hardware.fakequant.calibrate` on the same
  representative data, attacked white-box through its straight-through
  estimator.

Adversarial examples are crafted by `RobustnessEvaluator.craft` (the
evaluator's batches and random keys), and every precision is counted with
the evaluator's one metric definition (`summary.outcomes`: a non-finite
logit or adversarial input is never a correct prediction). Each row says
which model the examples were crafted on (`crafted_on`) and which one was
evaluated (`precision`). Metrics per attack and eps:

* `clean_accuracy`: pred(x) == y;
* `robust_accuracy`: pred(x_adv) == y and clean correct;
* `consistency`: pred(x_adv) == pred(x) (the study's "adversarial accuracy");
* `agreement_clean` / `agreement_adversarial`: top-1 of the int8 model
  equals top-1 of float32 on x / on the same x_adv.

With a `frontend` (signal space, `threat_space`) the attack perturbs the
raw signal; the front-end runs in float32 JAX and its output is quantised at
the int8 model's input, as on a device whose DSP computes the features.
Where TFLite Micro can run the flatbuffer, a sample of clean and adversarial
int8 inputs is run through it and its int8 outputs are compared with
LiteRT's (`hardware.litert.tflm_check`), so the numbers hold for the MCU
runtime.

Routes and their worst case (`evaluation.routes`): when 'square' is among
the attacks, Square is also driven on LiteRT's own int8 scores
(`routes.square_on_scores`, the Square settings of the attack section;
`'int8-litert->int8-litert'`), and `worst_case` is the int8 robust accuracy
taken per example as the minimum over every route that reaches the LiteRT
model (transfer from float32, from the white-box attack on the fake-quantised
model, Square on LiteRT), with each route's number beside it.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from tinyrobust import hardware
from tinyrobust.attacks import config as attack_config_lib
from tinyrobust.evaluation import inputs
from tinyrobust.evaluation import robustness
from tinyrobust.evaluation import routes as routes_lib
from tinyrobust.evaluation import summary
from tinyrobust.evaluation.threat_space import check_precisions
from tinyrobust.evaluation.threat_space import PRECISIONS
from tinyrobust.hardware import fakequant
from tinyrobust.hardware import litert

TFLM_SAMPLES = 8  # clean + as many adversarial inputs run through TFLM
PROTOCOL = (
    'same examples, eps grid and attacks for every precision; float32 and '
    'int8-fakequant attacked white-box, int8-litert (full-integer TFLite '
    'flatbuffer in LiteRT, calibrated on hardware.representative(x_train)) '
    'evaluated on examples crafted on float32 and on int8-fakequant '
    '(transfer); crafted_on->precision keys; denominators: all evaluated '
    'examples')


def craft(apply_fn: Callable, variables, kernels: Mapping[str, Any],
          x: np.ndarray, y: np.ndarray, grid: np.ndarray, *,
          batch_size: int, seed: int) -> dict[str, np.ndarray]:
  """Adversarial inputs `[E, N, ...]` per attack, crafted on `apply_fn` by
  `RobustnessEvaluator.craft` (its batches and random keys, so the float32
  examples are the evaluator's own)."""
  evaluator = robustness.RobustnessEvaluator(apply_fn, kernels, grid,
                                             batch_size=batch_size)
  return evaluator.craft(variables, x, y, seed=seed)


def _top1(logits, batch_axes: int) -> tuple[np.ndarray, np.ndarray]:
  """Top-1 and whether each example's logits are all finite."""
  logits = np.asarray(logits)
  return (np.argmax(logits, -1),
          np.asarray(summary.finite_rows(logits, batch_axes)))


def metrics(clean_logits, adv_logits, y, eps_grid: Sequence[float], *,
            adv_inputs_finite=None, ref_clean=None, ref_adv=None
            ) -> dict[str, Any]:
  """Rates of one model, counted with the evaluator's `summary.outcomes`.

  Args:
    clean_logits: outputs on x, `[N, K]`.
    adv_logits: outputs on x_adv, `[E, N, K]`.
    y: labels `[N]`.
    eps_grid: the `E` radii.
    adv_inputs_finite: `[E, N]`, whether each x_adv is finite (None: all).
    ref_clean, ref_adv: float32 top-1 on x `[N]` and x_adv `[E, N]`, for
      the top-1 agreement with float32 (None: not reported).
  """
  n = len(y)
  clean_pred, clean_fin = _top1(clean_logits, 1)
  adv_pred, adv_fin = _top1(adv_logits, 2)
  if adv_inputs_finite is not None:
    adv_fin = adv_fin & np.asarray(adv_inputs_finite)
  o = summary.outcomes(np.asarray(y), clean_pred, clean_fin, adv_pred,
                       adv_fin)
  rows = summary.per_eps_rates(eps_grid, o['robust'].sum(axis=1),
                               o['consistent'].sum(axis=1),
                               (~adv_fin).sum(axis=1), n)
  if ref_adv is not None:
    for e, r in enumerate(rows):
      r['agreement_adversarial'] = float(np.mean(adv_pred[e] == ref_adv[e]))
  clean_correct = int(o['clean'].sum())
  out = {'clean_correct': clean_correct, 'clean_accuracy': clean_correct / n,
         'clean_nonfinite': int((~clean_fin).sum()), 'per_eps': rows}
  if ref_clean is not None:
    out['agreement_clean'] = float(np.mean(clean_pred == ref_clean))
  return out


def _batched_predict(fn: Callable, x: np.ndarray, batch_size: int
                     ) -> np.ndarray:
  return np.concatenate([np.asarray(fn(x[i:i + batch_size]))
                         for i in range(0, len(x), batch_size)])


def _row(name, kind, eps, m, p, *, precision, crafted_on, n):
  return {'attack': name, 'kind': kind, 'eps': float(eps),
          'precision': precision, 'crafted_on': crafted_on,
          'clean_accuracy': m['clean_accuracy'],
          'robust_accuracy': p['robust_accuracy'],
          'consistency': p['consistency'],
          'clean_correct': m['clean_correct'],
          'robust_correct': p['robust_correct'],
          'consistent': p['consistent'], 'denominator': n,
          'agreement_clean': m.get('agreement_clean'),
          'agreement_adversarial': p.get('agreement_adversarial')}


def rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
  """CSV rows (one per evaluated model, crafting model, attack and eps) of
  an `evaluate_deployed` result."""
  out = []
  n, grid = result['num_examples'], result['eps_grid']
  for key, per_attack in result['evaluations'].items():
    crafted_on, precision = key.split('->')
    for name, m in per_attack.items():
      for eps, p in zip(grid, m['per_eps']):
        out.append(_row(name, result['kinds'][name], eps, m, p,
                        precision=precision, crafted_on=crafted_on, n=n))
  return out


class _Models:
  """The float32, LiteRT and fake-quant predictors on signal inputs."""

  def __init__(self, model, variables, frontend, x_train, precisions,
               batch_size):
    self.variables, self.batch_size = variables, batch_size
    self.frontend = jax.jit(frontend)
    self.f32 = lambda v, s: model.apply(v, frontend(s), train=False)
    rep = hardware.representative(x_train)
    self.flat = self.litert = self.fq = None
    if len(precisions) > 1:
      self.flat = hardware.export_tflite(model, variables, rep.shape[1:],
                                         quantize='int8',
                                         representative_data=rep)
      self.litert = litert.LiteRT(self.flat, batch_size)
    if 'int8-fakequant' in precisions:
      fq = fakequant.calibrate(model, variables, rep)
      self.fq = lambda v, s: fq.apply(v, frontend(s))
      self.fq_info = {'activation_quant_points': len(fq.plan.acts),
                      'weight_quant_points': len(fq.plan.weights),
                      'input_quantization': list(fq.input_quantization),
                      'calibration_examples': fq.num_calibration}

  def model_inputs(self, s: np.ndarray) -> np.ndarray:
    return _batched_predict(self.frontend, s, self.batch_size)

  def logits(self, which: str, s: np.ndarray) -> np.ndarray:
    """Outputs `[N, K]` of `which` ('float32', 'int8-litert',
    'int8-fakequant'; LiteRT's dequantised)."""
    if which == 'int8-litert':
      return self.litert(self.model_inputs(s))
    fn = jax.jit(self.f32 if which == 'float32' else self.fq)
    return _batched_predict(lambda a: fn(self.variables, a), s,
                            self.batch_size)


def litert_logits(model, variables, x_train: np.ndarray, *,
                  batch_size: int = 256, frontend: Callable | None = None
                  ) -> Callable[[np.ndarray], np.ndarray]:
  """`logits(x [N, ...]) -> [N, K]` of the model's full-integer int8
  flatbuffer in LiteRT (dequantised), exported and calibrated as
  `evaluate_deployed` does; with `frontend`, x is the signal."""
  m = _Models(model, variables, frontend or (lambda s: s), x_train,
              ('float32', 'int8-litert'), batch_size)
  return lambda x: m.logits('int8-litert', np.asarray(x))


def _fidelity(models: _Models, x: np.ndarray) -> dict[str, float]:
  """How closely the fake-quant model reproduces LiteRT on clean inputs:
  top-1 agreement and the largest logit difference in output steps."""
  got = models.logits('int8-fakequant', x)
  lite = models.logits('int8-litert', x)
  step = models.litert.out['quantization'][0] or 1.0
  return {'agreement_litert_clean': float(np.mean(got.argmax(-1) ==
                                                  lite.argmax(-1))),
          'max_abs_diff_litert_steps': float(np.max(np.abs(got - lite)) /
                                             step)}


def _evaluate_set(models: _Models, x, y, adv, grid, *, crafted_on: str,
                  evaluated: Sequence[str], sink=None) -> dict[str, Any]:
  """Metrics of each `evaluated` precision on one set of adversarial
  examples (int8 ones with their top-1 agreement with float32); the
  per-example LiteRT outcomes go to `sink['<attack>@<crafted_on>']`."""
  needed = sorted(set(evaluated) | {'float32'})
  clean = {p: models.logits(p, x) for p in needed}
  out = {f'{crafted_on}->{p}': {} for p in evaluated}
  for name, a in adv.items():
    adv_logits = {p: np.stack([models.logits(p, e) for e in a])
                  for p in needed}
    finite = np.asarray(summary.finite_rows(a, 2))
    for p in evaluated:
      ref = p != 'float32'
      out[f'{crafted_on}->{p}'][name] = metrics(
          clean[p], adv_logits[p], y, grid, adv_inputs_finite=finite,
          ref_clean=clean['float32'].argmax(-1) if ref else None,
          ref_adv=adv_logits['float32'].argmax(-1) if ref else None)
      if p == 'int8-litert' and sink is not None:
        sink[f'{name}@{crafted_on}'] = routes_lib.outcomes(
            y, clean[p], adv_logits[p], a)
  return out


def _square_on_litert(models: _Models, kernels, x, y, grid, *, seed: int,
                      batch_size: int, sink) -> dict[str, Any]:
  """Square driven on LiteRT's scores (`routes.square_on_scores`, the
  attack section's Square settings), evaluated on LiteRT."""
  square = [n for n, k in kernels.items() if k.name == 'square']
  if models.litert is None or not square:
    return {}
  score = lambda s: models.litert(models.model_inputs(s))
  adv = {n: routes_lib.square_on_scores(
      score, x, y, grid, seed=seed, batch_size=batch_size,
      **routes_lib.square_settings(kernels[n].config)) for n in square}
  return _evaluate_set(models, x, y, adv, grid, crafted_on='int8-litert',
                       evaluated=['int8-litert'], sink=sink)


def evaluate_deployed(model, variables, dataset, *, x_train: np.ndarray,
                      attacks: Sequence[str] = ('fgsm', 'pgd'),
                      eps_grid: Sequence[float], batch_size: int = 256,
                      seed: int = 0, max_examples: int | None = None,
                      clip: Any = 'dataset', eps_scale: Any = None,
                      frontend: Callable | None = None,
                      precisions: Sequence[str] = PRECISIONS,
                      tflm_samples: int = TFLM_SAMPLES,
                      **attack_settings) -> dict[str, Any]:
  """float32 vs int8 (LiteRT, fake-quant) robustness on the same examples.

  Args:
    model, variables: a zoo (Flax) model and its trained variables.
    dataset: the evaluation split (`Dataset` or `(x, y)`), in the attacked
      space: model inputs, or raw signals when `frontend` is given.
    x_train: training MODEL inputs; `hardware.representative` of them
      calibrates the int8 export and the fake-quant model.
    attacks, eps_grid, batch_size, seed, max_examples, clip,
      **attack_settings: as `robustness.evaluate_robustness` (eps and clip in
      the attacked space's units).
    eps_scale: per-channel eps scale (`make_pgd(eps_scale=)`), or None.
    frontend: signal -> model input (differentiable JAX), or None.
    precisions: which of `PRECISIONS` to report (float32 always is).
    tflm_samples: clean and adversarial inputs run through TFLite Micro
      (0 skips the check).

  Returns:
    `{'evaluations': {'<crafted_on>-><precision>': {attack: metrics}},
    'rows', 'tflm_check', 'fakequant', 'eps_grid', 'attacks', 'kinds',
    'num_examples', 'clip', 'precisions', 'protocol', 'worst_case'}`
    (module doc; 'worst_case': `routes.worst_case` over the routes to
    int8-litert, keyed '<attack>@<crafted_on>', None without LiteRT).
  """
  precisions = check_precisions(precisions)
  frontend_given, frontend = frontend, frontend or (lambda s: s)
  x, y, _, grid, clip = inputs.check_eval_inputs(
      lambda v, s: model.apply(v, frontend(s), train=False), variables,
      dataset, eps_grid=eps_grid, batch_size=batch_size, seed=seed,
      max_examples=max_examples, clip=clip)
  x_train = inputs.check_x_train(x_train, frontend_given, x)
  options = attack_config_lib.with_eps_scale(
      attack_settings.pop('options', None), attacks, eps_scale)
  models = _Models(model, variables, frontend, x_train,
                   precisions, min(int(batch_size), 256))
  crafting = {'float32': models.f32}
  if models.fq is not None:
    crafting['int8-fakequant'] = models.fq
  evaluations, kinds, adv_f32, sink = {}, {}, None, {}
  for crafted_on, fn in crafting.items():
    kernels = attack_config_lib.build_attacks(
        fn, attacks, clip=clip, options=options, **attack_settings)
    kinds = {n: k.name for n, k in kernels.items()}
    adv = craft(fn, variables, kernels, x, y, grid, batch_size=batch_size,
                seed=seed)
    if crafted_on == 'float32':
      adv_f32, kernels_f32 = adv, kernels
    evaluations.update(_evaluate_set(
        models, x, y, adv, grid, crafted_on=crafted_on, sink=sink,
        evaluated=[p for p in precisions if crafted_on == 'float32' and
                   p != 'int8-fakequant' or crafted_on != 'float32' and
                   p != 'float32']))
  evaluations.update(_square_on_litert(
      models, kernels_f32, x, y, grid, seed=seed, batch_size=batch_size,
      sink=sink))
  result = {
      'evaluations': evaluations, 'eps_grid': [float(e) for e in grid],
      'attacks': list(kinds), 'kinds': kinds, 'num_examples': int(len(y)),
      'precisions': list(precisions),
      'clip': None if clip is None else [np.asarray(c).tolist()
                                         for c in clip],
      'eps_scale': None if eps_scale is None else np.asarray(
          eps_scale).tolist(),
      'fakequant': getattr(models, 'fq_info', None),
      'tflm_check': None, 'protocol': PROTOCOL,
      'worst_case': routes_lib.worst_case(sink, grid) if sink else None}
  if models.fq is not None:
    result['fakequant'].update(_fidelity(models, x))
  if models.litert is not None and tflm_samples:
    sample = np.concatenate([x[:tflm_samples]] + [
        a[-1][:tflm_samples] for a in adv_f32.values()])
    result['tflm_check'] = litert.tflm_check(models.litert,
                                             models.model_inputs(sample))
  result['rows'] = rows(result)
  return result


def as_results(result: Mapping[str, Any], key: str,
               attack_configs: Mapping[str, Mapping[str, Any]]
               ) -> dict[str, Any]:
  """One evaluation (`'<crafted_on>-><precision>'`) of an
  `evaluate_deployed` result in the shape of `evaluate_robustness` results
  (for `tinyrobust.results.records`); `crafted_on` joins each attack's
  config."""
  crafted_on = key.split('->')[0]
  per_attack = result['evaluations'][key]
  first = next(iter(per_attack.values()))
  return {
      'denominator': result['num_examples'],
      'clean_accuracy': first['clean_accuracy'], 'flags': [],
      'attacks': {name: {
          'config': {**dict(attack_configs.get(name) or {}),
                     'crafted_on': crafted_on},
          'per_eps': [{'eps': e, **p} for e, p in zip(result['eps_grid'],
                                                      m['per_eps'])]}
                  for name, m in per_attack.items()}}


def print_deployed(result: Mapping[str, Any]) -> None:
  """The printed table: one line per evaluation, attack and eps."""
  print(f'[precisions: {result["protocol"]}; {result["num_examples"]} '
        'examples]')
  for r in result['rows']:
    agree = ('' if r['agreement_clean'] is None else
             f' agree(clean)={r["agreement_clean"]:.4f} agree(adv)='
             f'{r["agreement_adversarial"]:.4f}')
    print(f'{r["crafted_on"]:>14}->{r["precision"]:<14} {r["attack"]:>5} '
          f'eps={r["eps"]:.4g} clean={r["clean_accuracy"]:.4f} robust='
          f'{r["robust_accuracy"]:.4f} consistency={r["consistency"]:.4f}'
          + agree)
  if result.get('worst_case'):
    print('\n'.join(routes_lib.format_worst_case(result['worst_case'])))
  check = result.get('tflm_check')
  if check:
    print('TFLite Micro vs LiteRT int8 outputs: ' + (
        f'{"equal" if check["equal"] else "DIFFER"} on {check["samples"]} '
        f'inputs (max |diff| {check["max_abs_diff_int8_steps"]} int8 steps)'
        if check['ran'] else f'not run ({check["error"][:120]})'))
