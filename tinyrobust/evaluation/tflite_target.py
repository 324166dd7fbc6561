"""A bare `.tflite` flatbuffer as the attacked target: no JAX model needed.

    res = evaluate_tflite('kws.tflite', (x, y), eps_grid=[0, 0.5, 1],
                          attacks=['square', 'pgd'],
                          surrogate='/runs/kws_dscnn')  # or a Keras file
    print('\\n'.join(format_result(res)))

What a TinyML practitioner often has is only the flatbuffer that runs on the
board. It is run in the LiteRT interpreter (`hardware.litert.LiteRT`: its
input quantisation scale and zero point are read from the file, float inputs
are rounded and clipped to int8, outputs dequantised), and attacked along
every route that needs no JAX model of it (`evaluation.routes`):

* 'square@litert': the score-based Square attack driven on the
  interpreter's scores (`routes.square_on_scores`, the same driver as
  `evaluate_deployed`'s Square on LiteRT, so the same file, examples, seed
  and settings give the same x_adv);
* '<attack>@<surrogate>': every other listed attack (gradient-based) crafted
  white-box on a surrogate, evaluated on the flatbuffer (transfer); the
  surrogate is a tinyrobust run workdir or a Keras file / SavedModel with
  its zoo model name (`trained_elsewhere.load`), or an `(apply_fn,
  variables)` pair; it is attacked as the evaluator attacks it
  (`RobustnessEvaluator.craft`);
* 'worst_case': per example, robust only if robust under every route; each
  route's own number beside it.

The attack perturbs the flatbuffer's float inputs (before its int8 input
quantisation): eps in the data's units. Metrics: the evaluator's
(`summary.outcomes`), denominator all evaluated examples.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from tinyrobust import attacks as attacks_lib
from tinyrobust import data as data_lib
from tinyrobust import fileio
from tinyrobust import trained_elsewhere
from tinyrobust.attacks import config as attack_config_lib
from tinyrobust.evaluation import inputs
from tinyrobust.evaluation import robustness
from tinyrobust.evaluation import routes as routes_lib
from tinyrobust.hardware import litert

TFLITE_IDENTIFIER = b'TFL3'  # flatbuffer file identifier, bytes 4..8
SCORE_BASED = ('square',)
PROTOCOL = ('a bare int8/float TFLite flatbuffer in LiteRT (input '
            'quantisation read from the file); square@litert: Square on its '
            'scores; <attack>@<surrogate>: crafted white-box on the '
            'surrogate, evaluated on the flatbuffer; worst_case: per example '
            'the minimum over the routes; denominators: all evaluated '
            'examples')


@dataclasses.dataclass
class TFLiteTarget:
  """A flatbuffer loaded in LiteRT, with what was read from it."""
  path: str
  sha256: str
  runner: litert.LiteRT
  input_shape: tuple[int, ...]
  num_classes: int

  def info(self) -> dict[str, Any]:
    inp, out = self.runner.inp, self.runner.out
    return {'path': self.path, 'sha256': self.sha256,
            'bytes': len(self.runner.flatbuffer),
            'input_shape': list(self.input_shape),
            'input_dtype': np.dtype(inp['dtype']).name,
            'input_scale': float(inp['quantization'][0]),
            'input_zero_point': int(inp['quantization'][1]),
            'output_dtype': np.dtype(out['dtype']).name,
            'num_classes': self.num_classes}


def load_tflite(path: Any, batch_size: int = 256) -> TFLiteTarget:
  """Reads and checks a `.tflite` file and builds its LiteRT runner.

  Raises:
    ValueError: a missing path, a directory, a file that is not a TFLite
      flatbuffer (identifier `TFL3`), one LiteRT cannot load, or one whose
      output is not `[1, K]` logits/scores.
  """
  what = 'a TFLite flatbuffer file (.tflite, identifier b"TFL3")'
  if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
    raise ValueError(f'tflite must be the path of {what}, got {path!r}.')
  path = os.path.abspath(os.fspath(path))
  if not os.path.exists(path):
    raise ValueError(f'tflite {path!r} does not exist; expected {what}.')
  if os.path.isdir(path):
    raise ValueError(f'tflite {path!r} is a directory; expected {what} '
                     '(a SavedModel is a surrogate, not a tflite target).')
  with open(path, 'rb') as f:
    flat = f.read()
  if flat[4:8] != TFLITE_IDENTIFIER:
    raise ValueError(f'tflite {path!r} is not a TFLite flatbuffer: its bytes '
                     f'4..8 are {flat[4:8]!r}, expected {what}.')
  try:
    runner = litert.LiteRT(flat, batch_size)
  except (RuntimeError, ValueError) as err:
    raise ValueError(f'LiteRT cannot load tflite {path!r}: {err}') from None
  shape = tuple(int(d) for d in runner.inp['shape'])
  out = tuple(int(d) for d in runner.out['shape'])
  if len(out) != 2 or out[0] != 1 or out[1] < 2:
    raise ValueError(f'tflite {path!r} outputs shape {list(out)}; expected '
                     '[1, K] class scores (K >= 2) for one example.')
  return TFLiteTarget(path, hashlib.sha256(flat).hexdigest(), runner,
                      shape[1:], out[1])


def check_data(target: TFLiteTarget, dataset, *, eps_grid, batch_size,
               seed, max_examples=None, clip='dataset'):
  """`(x, y, grid, clip)` checked against the flatbuffer (as
  `inputs.check_eval_inputs` does against a JAX model)."""
  x, y, ds_classes, input_range = inputs.unpack_dataset(dataset)
  grid = inputs.check_eps_grid(eps_grid)
  inputs.check_int('batch_size', batch_size, 1)
  inputs.check_int('seed', seed, 0)
  if max_examples is not None:
    inputs.check_int('max_examples', max_examples, 1)
  if len(x) == 0:
    raise ValueError('dataset is empty.')
  if tuple(x.shape[1:]) != target.input_shape:
    raise ValueError(f'The data\'s examples have shape {list(x.shape[1:])} '
                     f'but tflite {target.path!r} takes inputs of shape '
                     f'{list(target.input_shape)} (one example, no batch '
                     'axis): evaluate it on the data it was exported for.')
  if ds_classes is not None and int(ds_classes) != target.num_classes:
    raise ValueError(f'tflite {target.path!r} outputs {target.num_classes} '
                     f'classes but the dataset has {ds_classes}.')
  if y.ndim != 1 or len(y) != len(x) or (y.size and (
      y.min() < 0 or y.max() >= target.num_classes)):
    raise ValueError(f'labels must be [N] = [{len(x)}] ints in [0, '
                     f'{target.num_classes}), got shape {list(y.shape)}'
                     f' and range {y.min() if y.size else None}..'
                     f'{y.max() if y.size else None}.')
  x = np.asarray(x, np.float32)
  if not np.isfinite(x).all():
    raise ValueError(f'dataset has {int((~np.isfinite(x)).sum())} '
                     'non-finite input values.')
  keep = inputs.subset_indices(len(x), max_examples, int(seed))
  if keep is not None:
    x, y = x[keep], y[keep]
  if isinstance(clip, str) and clip == 'dataset':
    clip = tuple(input_range) if input_range is not None else None
  inputs.check_clip_contains(x, clip)
  return x, np.asarray(y, np.int32), grid, clip


def load_surrogate(spec: Any, target: TFLiteTarget, x: np.ndarray, *,
                   dataset_name: str | None = None):
  """`(name, apply_fn, variables, source)` of the surrogate, checked to fit
  the target: same dataset (when both are known), input shape and classes.
  """
  if isinstance(spec, (tuple, list)) and len(spec) == 2 and callable(
      spec[0]):
    name, apply_fn, variables, source = 'surrogate', spec[0], spec[1], {
        'kind': 'callable'}
  else:
    m = trained_elsewhere.load(spec)
    name, apply_fn, variables, source = (m.name, m.apply_fn, m.variables,
                                         m.source)
    trained_on = source.get('dataset')
    if dataset_name and trained_on and trained_on != dataset_name:
      raise ValueError(
          f'Surrogate {source["path"]!r} was trained on {trained_on!r} but '
          f'tflite {target.path!r} is evaluated on {dataset_name!r}: use a '
          f'surrogate of the same task.')
  try:
    out = jax.eval_shape(apply_fn, variables, x[:1])
  except Exception as err:  # pylint: disable=broad-except
    raise ValueError(f'Surrogate {name!r} cannot take the data\'s inputs of '
                     f'shape {list(x.shape[1:])}: {type(err).__name__}: '
                     f'{str(err)[:300]}') from None
  if tuple(out.shape) != (1, target.num_classes):
    raise ValueError(f'Surrogate {name!r} outputs shape {list(out.shape)} '
                     f'per example but tflite {target.path!r} has '
                     f'{target.num_classes} classes.')
  return name, apply_fn, variables, source


def _stacked_logits(target: TFLiteTarget, adv: np.ndarray) -> np.ndarray:
  return np.stack([target.runner(a) for a in adv])


def evaluate_tflite(path: Any, dataset, *, eps_grid: Sequence[float],
                    attacks: Sequence[str] = ('square',),
                    surrogate: Any = None, dataset_name: str | None = None,
                    batch_size: int = 256, seed: int = 0,
                    max_examples: int | None = None, clip: Any = 'dataset',
                    **attack_settings) -> dict[str, Any]:
  """Robustness of a bare `.tflite` model over every route (module doc).

  Args:
    path: the `.tflite` file.
    dataset: `Dataset` or `(x, y)` in the flatbuffer's float input space.
    eps_grid: radii in the inputs' units.
    attacks: registered names; 'square' runs on the flatbuffer's scores,
      every other one is crafted on `surrogate` (transfer).
    surrogate: None (score-based routes only), a run workdir, a Keras file /
      SavedModel spec (`trained_elsewhere.load`) or `(apply_fn, variables)`.
    dataset_name: the data's name, checked against a workdir surrogate's.
    batch_size, seed, max_examples, clip: as `evaluate_robustness`.
    **attack_settings: norm, loss, pgd_steps, pgd_restarts, options (as
      `attacks.config.build_attacks`).

  Returns:
    `{'target': info, 'surrogate', 'clean_accuracy', 'routes': {route:
    rates}, 'worst_case', 'eps_grid', 'num_examples', 'attacks',
    'wall_seconds': {'clean', route..., 'total'}, 'protocol'}`.
  """
  t_start = time.perf_counter()
  target = load_tflite(path, min(int(batch_size), 256)
                       if isinstance(batch_size, int) else 256)
  x, y, grid, clip = check_data(target, dataset, eps_grid=eps_grid,
                                batch_size=batch_size, seed=seed,
                                max_examples=max_examples, clip=clip)
  known = attacks_lib.list_attacks()
  if isinstance(attacks, str) or not attacks or any(
      a not in known for a in attacks):
    raise ValueError(f'attacks must be a non-empty list of names from '
                     f'{known}, got {attacks!r}.')
  transfer = [a for a in attacks if a not in SCORE_BASED]
  if transfer and surrogate is None:
    raise ValueError(f'Attacks {transfer} are crafted on a surrogate and '
                     'transferred: give surrogate= (a run workdir, a Keras '
                     'file or SavedModel with its model name), or list only '
                     f'the score-based {list(SCORE_BASED)}.')
  sur = None if surrogate is None else load_surrogate(
      surrogate, target, x, dataset_name=dataset_name)
  apply_fn = sur[1] if sur else (lambda v, a: a)
  kernels = attack_config_lib.build_attacks(apply_fn, attacks, clip=clip,
                                            **attack_settings)
  t0 = time.perf_counter()
  clean = target.runner(x)
  wall = {'clean': time.perf_counter() - t0}
  outs = {}
  for name, k in kernels.items():
    if k.name not in SCORE_BASED:
      continue
    t0 = time.perf_counter()
    adv = routes_lib.square_on_scores(
        target.runner, x, y, grid, seed=seed, batch_size=batch_size,
        **routes_lib.square_settings(k.config))
    route = f'{name}@litert'
    outs[route] = routes_lib.outcomes(y, clean, _stacked_logits(target, adv),
                                      adv)
    wall[route] = time.perf_counter() - t0
  outs.update(_transfer_routes(sur, kernels, target, x, y, grid, clean,
                               seed=seed, batch_size=batch_size, wall=wall))
  wc = routes_lib.worst_case(outs, grid)
  wall['total'] = time.perf_counter() - t_start
  return {'target': target.info(), 'protocol': PROTOCOL,
          'surrogate': None if sur is None else {'name': sur[0], **sur[3]},
          'clean_accuracy': wc['clean_accuracy'],
          'clean_correct': wc['clean_correct'],
          'routes': {r: routes_lib.rates(o, grid) for r, o in outs.items()},
          'worst_case': wc, 'eps_grid': [float(e) for e in grid],
          'num_examples': int(len(y)), 'seed': int(seed),
          'batch_size': int(batch_size),
          'attacks': {n: dict(k.config) for n, k in kernels.items()},
          'wall_seconds': wall}


def _transfer_routes(sur, kernels, target, x, y, grid, clean, *, seed,
                     batch_size, wall) -> dict[str, Any]:
  """Outcomes on the flatbuffer of the attacks crafted on the surrogate."""
  gradient = {n: k for n, k in kernels.items() if k.name not in SCORE_BASED}
  if not gradient:
    return {}
  name, apply_fn, variables, _ = sur
  t0 = time.perf_counter()
  evaluator = robustness.RobustnessEvaluator(apply_fn, gradient, grid,
                                             batch_size=batch_size)
  adv = evaluator.craft(variables, x, y, seed=seed)
  wall[f'craft@{name}'] = time.perf_counter() - t0
  out = {}
  for a, xa in adv.items():
    t0 = time.perf_counter()
    out[f'{a}@{name}'] = routes_lib.outcomes(
        y, clean, _stacked_logits(target, xa), xa)
    wall[f'{a}@{name}'] = time.perf_counter() - t0
  return out


def format_result(res: dict[str, Any]) -> list[str]:
  """Printed lines: the target, clean accuracy, each route per eps, the
  worst case, wall times."""
  t = res['target']
  lines = [f'[{os.path.basename(t["path"])}: {t["bytes"]} bytes, input '
           f'{t["input_dtype"]} {t["input_shape"]} scale '
           f'{t["input_scale"]:.4g} zero point {t["input_zero_point"]}; '
           f'{res["num_examples"]} examples; {res["protocol"]}]',
           f'clean accuracy (LiteRT) {res["clean_accuracy"]:.4f}']
  lines += routes_lib.format_worst_case(res['worst_case'])
  lines.append('wall seconds: ' + ', '.join(
      f'{k}={v:.1f}' for k, v in res['wall_seconds'].items()))
  return lines


RESULTS_NAME = 'tflite_results'
TARGET_FIELDS = ('tflite', 'surrogate', 'surrogate_model', 'surrogate_kwargs')


def surrogate_spec(section: Mapping[str, Any]) -> Any:
  """The `target` config section's surrogate: None ('' path), a run
  workdir path, or a Keras / SavedModel spec with its zoo model."""
  unknown = sorted(set(section) - set(TARGET_FIELDS))
  if unknown:
    raise ValueError(f'Unknown config.target field(s) {unknown}; valid: '
                     f'{", ".join(TARGET_FIELDS)}.')
  path = section.get('surrogate') or ''
  if not path:
    if section.get('surrogate_model'):
      raise ValueError('config.target.surrogate_model is set but '
                       'config.target.surrogate (its file) is empty.')
    return None
  spec = {'path': path}
  if section.get('surrogate_model'):
    spec['model'] = section['surrogate_model']
    spec['kwargs'] = dict(section.get('surrogate_kwargs') or {})
  return spec


def attack(config, workdir: str) -> dict[str, Any]:
  """`--mode=attack` on a bare flatbuffer (`config.target.tflite`).

  Evaluates the `data` section's test split with `evaluate_tflite` over the
  `attack` section (eps grid, attacks, options; 'square' on the flatbuffer,
  the others crafted on `config.target.surrogate`); writes
  `<workdir>/tflite_results.json` and prints the table.
  """
  section = dict(config.target.to_dict() if hasattr(config.target, 'to_dict')
                 else config.target)
  spec = surrogate_spec(section)
  acfg = attack_config_lib.attack_config(config)
  target = load_tflite(section.get('tflite'))  # checked before any data
  if spec is not None:
    trained_elsewhere.check_spec(spec)
  name = config.data.name
  options = dict(config.data.get('options') or {})
  ds = data_lib.load(name, 'test', **options)
  settings = attack_config_lib.evaluator_settings(acfg)
  res = evaluate_tflite(target.path, ds, surrogate=spec, dataset_name=name,
                        seed=int(config.get('seed', 0)), **settings)
  res['data'] = {'name': name, 'split': 'test', 'options': options}
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, RESULTS_NAME + '.json')
  fileio.write_json(path, res)
  print('\n'.join(format_result(res)))
  print(f'Wrote {path}')
  return res
