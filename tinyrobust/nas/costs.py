"""Hardware cost of a candidate *before* training, and the board budget.

Flash, SRAM and FLOPs depend on shapes only, so they are computed on freshly
initialised variables and an infeasible candidate is rejected without being
trained. The figures come from `tinyrobust.hardware`:

* FLOPs: `hardware.counters.count` (analytic, from the jaxpr).
* flash (`flash_proxy`): 'tflite' = size of the TFLite flatbuffer
  (`hardware.export.export_tflite`, the study's proxy), or 'param_bytes' =
  weight bytes only (analytic lower bound, no TensorFlow; for fast runs).
* SRAM (`sram_gate`): 'study' = the study's proxy (max over layers of input
  + output activation bytes), 'liveness' = TFLM's memory plan + persistent
  estimate (on the exported graph when there is one, else on the jaxpr),
  'tflm' = the arena the TFLite Micro interpreter really allocates (needs
  the flatbuffer, so it implies an export).
* The export, calibration and measurement are `hardware.deployed_cost`, the
  same path as `hardware.profile` (`--mode=profile`), so a search's flash and
  SRAM figures equal the profile's for the same model. All three are reported when
  available; only the chosen one gates feasibility and enters the objective.
* precision: 'int8' (full-integer model, calibrated on training inputs; how
  TinyML models are deployed) or 'float32'.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from tinyrobust import hardware
from tinyrobust.hardware import counters

SRAM_GATES = ('study', 'liveness', 'tflm')
FLASH_PROXIES = ('tflite', 'param_bytes')
PRECISIONS = ('int8', 'float32')


def check_options(*, sram_gate: str, flash_proxy: str, precision: str) -> None:
  if sram_gate not in SRAM_GATES:
    raise ValueError(f'Unknown search.sram_gate {sram_gate!r}. Valid: '
                     f'{SRAM_GATES}.')
  if flash_proxy not in FLASH_PROXIES:
    raise ValueError(f'Unknown search.flash_proxy {flash_proxy!r}. Valid: '
                     f'{FLASH_PROXIES}.')
  if precision not in PRECISIONS:
    raise ValueError(f'Unknown search.precision {precision!r}. Valid: '
                     f'{PRECISIONS}.')
  if sram_gate == 'tflm' and flash_proxy != 'tflite':
    raise ValueError("search.sram_gate='tflm' measures the TFLite flatbuffer; "
                     "it needs search.flash_proxy='tflite'.")


def candidate_costs(model, input_shape, *, seed: int, sram_gate: str,
                    flash_proxy: str, precision: str,
                    representative_data: np.ndarray | None = None,
                    flash_max: float | None = None) -> dict[str, Any]:
  """Flash, SRAM and FLOPs of one untrained candidate (batch-1 inference).

  The analytic counters run on abstract variables (`jax.eval_shape` of
  `model.init`: no compilation); concrete variables are initialised only
  when a flatbuffer is needed. When the weight bytes alone already exceed
  `flash_max` (the flatbuffer stores every weight, so they are a lower bound
  of its size) the export is skipped and `flash_bound='lower_bound'`.

  Args:
    model: Flax module with `__call__(x, train=False)`.
    input_shape: one example's shape, e.g. `(550, 6)`.
    seed: `model.init` key.
    sram_gate, flash_proxy, precision: see the module docstring.
    representative_data: `[N, *input_shape]` training inputs, needed to
      calibrate an int8 export.
    flash_max: flash budget in bytes for the early rejection, or None.

  Returns:
    `{'flash_bytes', 'flash_bound', 'sram_bytes', 'flops', 'macs', 'params',
    'param_bytes', 'sram_study', 'sram_liveness', 'sram_tflm' (when
    measured), 'tflite_bytes' (when exported), 'cost_timings': {...}}`;
    sizes in bytes. `sram_bytes` is None when the gate's figure could not
    be measured because the candidate was already rejected on flash.
  """
  check_options(sram_gate=sram_gate, flash_proxy=flash_proxy,
                precision=precision)
  input_shape = tuple(int(d) for d in input_shape)
  init = functools.partial(model.init, train=False)
  key = jax.random.key(int(seed))
  x = jnp.zeros((1,) + input_shape, jnp.float32)
  timings = {}
  t0 = time.perf_counter()
  abstract = jax.eval_shape(init, key, x)
  c = counters.count(model, abstract, input_shape)
  timings['count_s'] = time.perf_counter() - t0
  out = {'flops': int(c['flops']), 'macs': int(c['macs']),
         'params': int(c['params']),
         'sram_study': int(c[precision]['sram_study']),
         'sram_liveness': int(c[precision]['sram_liveness']),
         'param_bytes': int(c['param_bytes'][precision]),
         'flash_bound': 'exact'}
  if flash_proxy == 'param_bytes':
    out['flash_bytes'] = out['param_bytes']
  elif flash_max is not None and out['param_bytes'] > flash_max:
    out['flash_bytes'] = out['param_bytes']
    out['flash_bound'] = 'lower_bound'
  else:
    t0 = time.perf_counter()
    variables = jax.jit(init)(key, x)
    if precision == 'int8' and representative_data is None:
      raise ValueError('An int8 export needs representative_data.')
    sec = hardware.deployed_cost(
        model, variables, input_shape, precision=precision,
        representative_data=representative_data,
        measure=sram_gate == 'tflm', agreement=False)
    timings['export_s'] = time.perf_counter() - t0
    if 'tflm_error' in sec:
      raise ValueError(f'TFLite Micro cannot run the candidate: '
                       f'{sec["tflm_error"]}')
    out['tflite_bytes'] = out['flash_bytes'] = int(sec['flash'])
    out['sram_liveness_jaxpr'] = out['sram_liveness']
    out['sram_liveness'] = int(sec['sram_liveness'])
    if 'tflm_arena' in sec:
      out['sram_tflm'] = int(sec['tflm_arena'])
  out['sram_bytes'] = out.get(f'sram_{sram_gate}')
  out['cost_timings'] = timings
  return out


def board_budget(board: str | None, *, flash_max_bytes: float | None = None,
                 sram_max_bytes: float | None = None) -> dict[str, Any]:
  """`{'name', 'flash_max', 'sram_max'}` in bytes for the target.

  `flash_max_bytes` / `sram_max_bytes` override the board table (or define a
  custom target when `board` is empty); otherwise the figures come from
  `tinyrobust.hardware.get_board(board)`.
  """
  flash, sram = flash_max_bytes, sram_max_bytes
  name = board or 'custom'
  if flash is None or sram is None:
    if not board:
      raise ValueError('Set search.board (e.g. stm32f446re) or both '
                       'search.flash_max_bytes and search.sram_max_bytes.')
    info = hardware.get_board(board)
    flash = _field(info, 'flash_bytes', 'flash') if flash is None else flash
    sram = _field(info, 'sram_bytes', 'sram') if sram is None else sram
  flash, sram = float(flash), float(sram)
  if not flash > 0 or not sram > 0:
    raise ValueError(f'Board budgets must be > 0 bytes, got flash={flash}, '
                     f'sram={sram}.')
  return {'name': name, 'flash_max': flash, 'sram_max': sram}


def _field(info: Any, *names: str) -> float:
  for n in names:
    if isinstance(info, Mapping) and n in info:
      return float(info[n])
    if hasattr(info, n):
      return float(getattr(info, n))
  raise ValueError(f'Board record {info!r} has none of the fields {names}.')
