"""Robustness of the model the MCU runs: the int8 TFLite flatbuffer.

`evaluate_deployed` compares three precisions on the same examples, eps
grid and attacks (with the evaluator's definitions and denominator: all
evaluated examples):

* `float32`: the JAX model, attacked white-box (as `tinyrobust.evaluate`);
* `int8-litert`: the full-integer int8 flatbuffer of
  `tinyrobust.hardware.export_tflite` (calibrated on
  `hardware.representative(x_train)`, as `--mode=profile`) in the LiteRT
  interpreter, batched, with the model's input quantisation. It sees the
  adversarial examples crafted on float32 (transfer: the attacker knows the
  float model, the device runs its int8 conversion) and, when
  `int8-fakequant` is asked for too, those crafted on the fake-quantised
  model;
* `int8-fakequant`: `tinyrobust.quantize.calibrate` on the same
  representative data, attacked white-box through its straight-through
  estimator.

Each row says which model the examples were crafted on (`crafted_on`) and
which one was evaluated (`precision`). Metrics per attack and eps:

* `clean_accuracy`: pred(x) == y;
* `robust_accuracy`: pred(x_adv) == y and clean correct;
* `consistency`: pred(x_adv) == pred(x) (the study's "adversarial accuracy");
* `agreement_clean` / `agreement_adversarial`: top-1 of the int8 model
  equals top-1 of float32 on x / on the same x_adv.

With a `frontend` (signal space, `tinyrobust.threat_model`) the attack
perturbs the raw signal; the front-end runs in float32 JAX and its output
is quantised at the int8 model's input, as on a device whose DSP computes
the features. Where TFLite Micro can run the flatbuffer, a sample of clean
and adversarial int8 inputs is run through it and its int8 outputs are
compared with LiteRT's (`tflm_check`), so the numbers hold for the MCU
runtime.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from tinyrobust import sharding
from tinyrobust.attacks import config as attack_config_lib
from tinyrobust.evaluation import inputs
from tinyrobust.evaluation.threat_space import check_precisions
from tinyrobust.evaluation.threat_space import PRECISIONS

TFLM_SAMPLES = 8  # clean + as many adversarial inputs run through TFLM


class LiteRT:
  """A flatbuffer in the LiteRT interpreter, run on batches.

  The interpreter is resized to the batch when the graph allows it (checked
  once against single-example runs), else examples run one at a time.
  """

  def __init__(self, flatbuffer: bytes, batch_size: int = 64):
    from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
    self.flatbuffer = bytes(flatbuffer)
    self._make = lambda: Interpreter(model_content=self.flatbuffer)
    self.single = self._make()
    self.single.allocate_tensors()
    self.inp = self.single.get_input_details()[0]
    self.out = self.single.get_output_details()[0]
    self.batch_size = int(batch_size)
    self._batched = None  # unknown until the first call

  def quantize_input(self, x) -> np.ndarray:
    """Float inputs -> the input tensor's dtype (int8: round, clip)."""
    x = np.asarray(x, np.float32)
    if self.inp['dtype'] == np.float32:
      return x
    scale, zero = self.inp['quantization']
    info = np.iinfo(self.inp['dtype'])
    return np.clip(np.round(x / scale + zero), info.min,
                   info.max).astype(self.inp['dtype'])

  def dequantize_output(self, q) -> np.ndarray:
    if self.out['dtype'] == np.float32:
      return np.asarray(q, np.float32)
    scale, zero = self.out['quantization']
    return (np.asarray(q, np.float32) - zero) * scale

  def _one(self, xq: np.ndarray) -> np.ndarray:
    outs = []
    for row in xq:
      self.single.set_tensor(self.inp['index'], row[None])
      self.single.invoke()
      outs.append(self.single.get_tensor(self.out['index'])[0].copy())
    return np.stack(outs)

  def _many(self, xq: np.ndarray) -> np.ndarray:
    it = self._make()
    it.resize_tensor_input(self.inp['index'], list(xq.shape))
    it.allocate_tensors()
    it.set_tensor(self.inp['index'], xq)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]['index']).copy()

  def run_quantized(self, xq: np.ndarray) -> np.ndarray:
    """Raw output tensors `[B, K]` for input tensors `xq` `[B, ...]`."""
    if self._batched is None and len(xq) > 1:
      try:
        probe = xq[:4]
        self._batched = bool(np.array_equal(self._many(probe),
                                            self._one(probe)))
      except (RuntimeError, ValueError):
        self._batched = False
    if not self._batched:
      return self._one(xq)
    return np.concatenate([self._many(xq[i:i + self.batch_size])
                           for i in range(0, len(xq), self.batch_size)])

  def __call__(self, x) -> np.ndarray:
    """Float (dequantised) outputs `[B, K]` of float inputs `[B, ...]`."""
    return self.dequantize_output(self.run_quantized(self.quantize_input(x)))


_TFLM_WORKER = r'''
import sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime
path, arena, xs_path, out_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
with open(path, 'rb') as f:
  it = runtime.Interpreter.from_bytes(f.read(), arena_size=arena)
outs = []
for row in np.load(xs_path):
  it.set_input(row[None], 0)
  it.invoke()
  outs.append(np.array(it.get_output(0))[0])
np.save(out_path, np.stack(outs))
'''


def tflm_outputs(flatbuffer: bytes, xq: np.ndarray) -> np.ndarray:
  """Raw int8 outputs of TFLite Micro for int8 inputs `xq` `[B, ...]`.

  Runs in a child process (TFLM aborts the process on failure) with the
  arena `hardware.measure_tflm` finds.

  Raises:
    ValueError: TFLite Micro cannot run the model (named op or arena).
  """
  from tinyrobust.hardware import tflm  # pylint: disable=g-import-not-at-top
  arena = tflm.measure_tflm(flatbuffer)['arena_size']
  with tempfile.TemporaryDirectory() as d:
    paths = [os.path.join(d, n) for n in ('m.tflite', 'x.npy', 'y.npy')]
    with open(paths[0], 'wb') as f:
      f.write(flatbuffer)
    np.save(paths[1], xq)
    r = subprocess.run([sys.executable, '-c', _TFLM_WORKER, paths[0],
                        str(arena), paths[1], paths[2]],
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'})
    if r.returncode != 0 or not os.path.exists(paths[2]):
      raise ValueError(f'TFLite Micro failed on the sample (exit '
                       f'{r.returncode}): {(r.stderr + r.stdout)[-400:]}')
    return np.load(paths[2])


def tflm_check(runner: LiteRT, x_model: np.ndarray) -> dict[str, Any]:
  """LiteRT vs TFLite Micro int8 outputs on model inputs `x_model`."""
  xq = runner.quantize_input(x_model)
  try:
    micro = tflm_outputs(runner.flatbuffer, xq)
  except (ValueError, RuntimeError, OSError,
          subprocess.TimeoutExpired) as err:
    return {'ran': False, 'error': str(err)[:400], 'samples': len(xq)}
  lite = runner.run_quantized(xq)
  diff = np.abs(micro.astype(np.int64) - lite.astype(np.int64))
  return {'ran': True, 'samples': len(xq), 'equal': bool(diff.max() == 0),
          'max_abs_diff_int8_steps': int(diff.max()),
          'top1_agreement': float(np.mean(micro.argmax(-1) ==
                                          lite.argmax(-1)))}


def craft(variables, kernels: Mapping[str, Any], x: np.ndarray,
          y: np.ndarray, grid: np.ndarray, *, batch_size: int, seed: int
          ) -> dict[str, np.ndarray]:
  """Adversarial inputs `[E, N, ...]` per attack, crafted on `apply_fn`.

  Batches and random keys are those of `evaluate.RobustnessEvaluator`
  (`padded_batches`, `fold_in(fold_in(key(seed), attack), batch)`), so the
  float32 examples are the evaluator's own.
  """
  mesh = sharding.batch_mesh()
  root = jax.random.key(int(seed))
  grid = np.asarray(grid, x.dtype)
  out = {}
  for a, (name, attack) in enumerate(kernels.items()):
    kernel = getattr(attack, 'kernel', attack)
    fn = jax.jit(jax.vmap(kernel, in_axes=(None, None, None, None, 0)))
    parts = []
    for b, (xb, yb), n_valid in sharding.padded_batches(
        (x, y.astype(np.int32)), batch_size, mesh):
      key = jax.random.fold_in(jax.random.fold_in(root, a), b)
      x_adv = fn(variables, xb, yb, key, grid)
      x_adv = x_adv[0] if isinstance(x_adv, tuple) else x_adv
      parts.append(np.asarray(x_adv)[:, :n_valid])
    out[name] = np.concatenate(parts, axis=1)
  return out


def metrics(pred_clean, pred_adv, y, ref_clean=None, ref_adv=None
            ) -> dict[str, Any]:
  """Rates of one model: predictions on x `[N]` and x_adv `[E, N]`; with
  float32 references, the top-1 agreement with them."""
  n = len(y)
  clean = pred_clean == y
  rows = []
  for e in range(pred_adv.shape[0]):
    r = {'robust_correct': int(np.sum(clean & (pred_adv[e] == y))),
         'consistent': int(np.sum(pred_adv[e] == pred_clean))}
    r.update(robust_accuracy=r['robust_correct'] / n,
             consistency=r['consistent'] / n)
    if ref_adv is not None:
      r['agreement_adversarial'] = float(np.mean(pred_adv[e] == ref_adv[e]))
    rows.append(r)
  out = {'clean_correct': int(clean.sum()),
         'clean_accuracy': float(np.mean(clean)), 'per_eps': rows}
  if ref_clean is not None:
    out['agreement_clean'] = float(np.mean(pred_clean == ref_clean))
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
    from tinyrobust import hardware  # pylint: disable=g-import-not-at-top
    from tinyrobust import quantize  # pylint: disable=g-import-not-at-top
    self.variables, self.batch_size = variables, batch_size
    self.frontend = jax.jit(frontend)
    self.f32 = lambda v, s: model.apply(v, frontend(s), train=False)
    rep = hardware.representative(x_train)
    self.flat = self.litert = self.fq = None
    if len(precisions) > 1:
      self.flat = hardware.export_tflite(model, variables, rep.shape[1:],
                                         quantize='int8',
                                         representative_data=rep)
      self.litert = LiteRT(self.flat, batch_size)
    if 'int8-fakequant' in precisions:
      fq = quantize.calibrate(model, variables, rep)
      self.fq = lambda v, s: fq.apply(v, frontend(s))
      self.fq_info = {'activation_quant_points': len(fq.plan.acts),
                      'weight_quant_points': len(fq.plan.weights),
                      'input_quantization': list(fq.input_quantization),
                      'calibration_examples': fq.num_calibration}

  def model_inputs(self, s: np.ndarray) -> np.ndarray:
    return _batched_predict(self.frontend, s, self.batch_size)

  def predict(self, which: str, s: np.ndarray) -> np.ndarray:
    """Top-1 of `which` ('float32', 'int8-litert', 'int8-fakequant')."""
    if which == 'int8-litert':
      return self.litert(self.model_inputs(s)).argmax(-1)
    fn = jax.jit(self.f32 if which == 'float32' else self.fq)
    return _batched_predict(lambda a: fn(self.variables, a), s,
                            self.batch_size).argmax(-1)


def _fidelity(models: _Models, x: np.ndarray) -> dict[str, float]:
  """How closely the fake-quant model reproduces LiteRT on clean inputs:
  top-1 agreement and the largest logit difference in output steps."""
  fq = jax.jit(models.fq)
  got = _batched_predict(lambda a: fq(models.variables, a), x,
                         models.batch_size)
  lite = models.litert(models.model_inputs(x))
  step = models.litert.out['quantization'][0] or 1.0
  return {'agreement_litert_clean': float(np.mean(got.argmax(-1) ==
                                                  lite.argmax(-1))),
          'max_abs_diff_litert_steps': float(np.max(np.abs(got - lite)) /
                                             step)}


def _evaluate_set(models: _Models, x, y, adv, *, crafted_on: str,
                  evaluated: Sequence[str]) -> dict[str, Any]:
  """Metrics of each `evaluated` precision on one set of adversarial
  examples (int8 ones with their top-1 agreement with float32)."""
  needed = sorted(set(evaluated) | {'float32'})
  pred = {p: models.predict(p, x) for p in needed}
  out = {f'{crafted_on}->{p}': {} for p in evaluated}
  for name, a in adv.items():
    adv_pred = {p: np.stack([models.predict(p, e) for e in a])
                for p in needed}
    for p in evaluated:
      ref = p != 'float32'
      out[f'{crafted_on}->{p}'][name] = metrics(
          pred[p], adv_pred[p], y, pred['float32'] if ref else None,
          adv_pred['float32'] if ref else None)
  return out


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
      **attack_settings: as `evaluate.evaluate_robustness` (eps and clip in
      the attacked space's units).
    eps_scale: per-channel eps scale (`make_pgd(eps_scale=)`), or None.
    frontend: signal -> model input (differentiable JAX), or None.
    precisions: which of `PRECISIONS` to report (float32 always is).
    tflm_samples: clean and adversarial inputs run through TFLite Micro
      (0 skips the check).

  Returns:
    `{'evaluations': {'<crafted_on>-><precision>': {attack: metrics}},
    'rows', 'tflm_check', 'fakequant', 'eps_grid', 'attacks', 'kinds',
    'num_examples', 'clip', 'precisions', 'protocol'}` (module doc).
  """
  precisions = check_precisions(precisions)
  frontend = frontend or (lambda s: s)
  x, y, _, grid, clip = inputs.check_eval_inputs(
      lambda v, s: model.apply(v, frontend(s), train=False), variables,
      dataset, eps_grid=eps_grid, batch_size=batch_size, seed=seed,
      max_examples=max_examples, clip=clip)
  options = with_eps_scale(attack_settings.pop('options', None), attacks,
                           eps_scale)
  models = _Models(model, variables, frontend, np.asarray(x_train),
                   precisions, min(int(batch_size), 256))
  crafting = {'float32': models.f32}
  if models.fq is not None:
    crafting['int8-fakequant'] = models.fq
  evaluations, kinds, adv_f32 = {}, {}, None
  for crafted_on, fn in crafting.items():
    kernels = attack_config_lib.build_attacks(fn, attacks, clip=clip, options=options,
                                     **attack_settings)
    kinds = {n: k.name for n, k in kernels.items()}
    adv = craft(variables, kernels, x, y, grid, batch_size=batch_size,
                seed=seed)
    adv_f32 = adv if crafted_on == 'float32' else adv_f32
    evaluations.update(_evaluate_set(
        models, x, y, adv, crafted_on=crafted_on,
        evaluated=[p for p in precisions if crafted_on == 'float32' and
                   p != 'int8-fakequant' or crafted_on != 'float32' and
                   p != 'float32']))
  result = {
      'evaluations': evaluations, 'eps_grid': [float(e) for e in grid],
      'attacks': list(kinds), 'kinds': kinds, 'num_examples': int(len(y)),
      'precisions': list(precisions),
      'clip': None if clip is None else [np.asarray(c).tolist()
                                         for c in clip],
      'eps_scale': None if eps_scale is None else np.asarray(
          eps_scale).tolist(),
      'fakequant': getattr(models, 'fq_info', None),
      'tflm_check': None, 'protocol': PROTOCOL}
  if models.fq is not None:
    result['fakequant'].update(_fidelity(models, x))
  if models.litert is not None and tflm_samples:
    sample = np.concatenate([x[:tflm_samples]] + [
        a[-1][:tflm_samples] for a in adv_f32.values()])
    result['tflm_check'] = tflm_check(models.litert,
                                      models.model_inputs(sample))
  result['rows'] = rows(result)
  return result


PROTOCOL = (
    'same examples, eps grid and attacks for every precision; float32 and '
    'int8-fakequant attacked white-box, int8-litert (full-integer TFLite '
    'flatbuffer in LiteRT, calibrated on hardware.representative(x_train)) '
    'evaluated on examples crafted on float32 and on int8-fakequant '
    '(transfer); crafted_on->precision keys; denominators: all evaluated '
    'examples')


def with_eps_scale(options, attacks: Sequence[str], eps_scale
                   ) -> dict[str, dict[str, Any]]:
  """Per-attack options with `eps_scale` set for every attack that takes it.

  Raises:
    ValueError: an attack listed that cannot scale eps per channel while
      `eps_scale` is given.
  """
  from tinyrobust import attacks as attacks_lib  # pylint: disable=g-import-not-at-top
  from tinyrobust import config_io  # pylint: disable=g-import-not-at-top
  out = {k: dict(v) for k, v in (config_io.to_dict(options) or {}).items()}
  if eps_scale is None:
    return out
  for name in attacks:
    accepted = attacks_lib.attack_options(name)
    if accepted is not None and 'eps_scale' not in accepted:
      raise ValueError(f'Attack {name!r} does not take a per-channel '
                       f'eps_scale, which this threat model needs; use one '
                       'of the attacks that do (fgsm, pgd, apgd, ...).')
    out.setdefault(name, {})['eps_scale'] = eps_scale
  return out


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
  check = result.get('tflm_check')
  if check:
    print('TFLite Micro vs LiteRT int8 outputs: ' + (
        f'{"equal" if check["equal"] else "DIFFER"} on {check["samples"]} '
        f'inputs (max |diff| {check["max_abs_diff_int8_steps"]} int8 steps)'
        if check['ran'] else f'not run ({check["error"][:120]})'))
