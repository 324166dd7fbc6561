"""One record of what a model costs on an MCU: `profile` and `deployed_cost`.

`profile(model, variables, input_shape)` combines the analytic counters
(`counters.count`), the TFLite exports (float32 and int8), the LiteRT
agreement checks, the SRAM estimates and, with `measure=True`, the TFLite
Micro arena, plus the budget check on every known board:

    {'params', 'param_bytes', 'macs', 'macs_dense', 'flops',
     'transcendentals', 'layers', 'input_shape', 'notes',
     'float32': {'flash', 'sram_study', 'sram_liveness', 'sram_liveness_jaxpr',
                 'activation_arena', 'persistent_estimate', 'agreement',
                 'tflm_arena', 'tflm_arena_head', 'tflm_arena_tail',
                 'sram_study_error', 'sram_liveness_error',
                 'sram_liveness_jaxpr_error'},
     'int8': {... same ...},
     'boards': {board: {'float32': fits(...), 'int8': fits(...)}}}

Errors are relative to the TFLM arena: (estimate - tflm) / tflm. When TFLM
cannot run a precision (e.g. it has no int8 EXP kernel), that section holds
`tflm_error` instead of the measured fields.
`sram_liveness` is planned on the exported graph's op order (exact TFLM
planner) plus the persistent estimate; `sram_liveness_jaxpr` is the same
prediction from the jaxpr layer graph alone (no TensorFlow needed).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyrobust.hardware import boards as boards_lib
from tinyrobust.hardware import counters
from tinyrobust.hardware import export
from tinyrobust.hardware import persistent
from tinyrobust.hardware import tflite_graph
from tinyrobust.hardware import tflm

AGREEMENT_SAMPLES = 64  # examples run through LiteRT for the agreement check


def _rel(est: float, ref: float) -> float:
  return float((est - ref) / ref)


def representative(x_train) -> np.ndarray:
  """The calibration inputs of an int8 export: the first
  `export.MAX_CALIBRATION` training inputs (one size for every caller, so
  a search's flash/SRAM figures equal `--mode=profile`'s)."""
  return np.asarray(x_train[:export.MAX_CALIBRATION], np.float32)


def deployed_cost(model, variables, input_shape, *, precision: str,
                  representative_data=None, measure: bool = True,
                  agreement: bool = True) -> dict[str, Any]:
  """Flash and SRAM of one precision's TFLite flatbuffer.

  The one costing path shared by `profile` and the search: export
  (`export.export_tflite`, int8 calibrated on `representative_data`), the
  planned arena plus persistent estimate (`sram_liveness`), optionally the
  LiteRT agreement with JAX and the measured TFLite-Micro arena.

  Returns:
    {'flash', 'activation_arena', 'persistent_estimate', 'sram_liveness',
    'tflite_ops', 'agreement' (if asked), 'tflm_arena', 'tflm_arena_head',
    'tflm_arena_tail', 'tflm_breakdown' (if measured) or 'tflm_error'}.
  """
  if precision not in counters.PRECISIONS:
    raise ValueError(f'Unknown precision {precision!r}. Valid: '
                     f'{", ".join(counters.PRECISIONS)}.')
  rep = representative_data
  fb = export.export_tflite(model, variables, tuple(input_shape),
                            quantize='int8' if precision == 'int8' else None,
                            representative_data=rep)
  g = tflite_graph.parse(fb)
  head = tflite_graph.planned_arena(g)
  tail = persistent.from_tflite(g, precision)
  sec = {'flash': len(fb), 'activation_arena': head,
         'persistent_estimate': tail, 'sram_liveness': head + tail,
         'tflite_ops': g.op_names}
  if agreement and rep is not None:
    sec['agreement'] = export.agreement(fb, model, variables,
                                        rep[:AGREEMENT_SAMPLES])
  if measure:
    try:
      m = tflm.measure_tflm(fb)
    except ValueError as err:  # e.g. an op TFLM has no int8 kernel for
      sec['tflm_error'] = str(err)
    else:
      sec.update(tflm_arena=m['total'], tflm_arena_head=m['head'],
                 tflm_arena_tail=m['tail'], tflm_breakdown=m['breakdown'])
  return sec


def profile(model, variables, input_shape, *, measure: bool = True,
            representative_data=None, boards=None) -> dict[str, Any]:
  """Hardware cost of a model on one example (batch 1).

  Args:
    model: Flax linen module with `__call__(x, train=False)`.
    variables: its variables pytree.
    input_shape: one example's shape without batch axis, e.g. `(8, 8, 1)`.
    measure: also run TFLite Micro to measure the arena (a subprocess per
      precision, ~1 s each).
    representative_data: training inputs `[N, *input_shape]` used to
      calibrate int8 and to check agreement. None uses 64 standard-normal
      samples (int8 accuracy then unrepresentative; noted in `notes`).
    boards: board names/dicts to check; default every known board.

  Returns:
    The profile dict described in the module docstring (bytes, counts).
  """
  input_shape = tuple(input_shape)
  board_list = [boards_lib.get_board(b)
                for b in (boards_lib.list_boards() if boards is None
                          else boards)]
  out = counters.count(model, variables, input_shape)
  out['input_shape'] = list(input_shape)
  if representative_data is None:
    rep = np.random.default_rng(0).standard_normal(
        (AGREEMENT_SAMPLES,) + input_shape).astype(np.float32)
    out['notes'].append('int8 calibrated on synthetic N(0,1) inputs: '
                        'flash/arena valid, int8 accuracy not.')
  else:
    rep = np.asarray(representative_data, np.float32)
    if rep.ndim != len(input_shape) + 1 or rep.shape[1:] != input_shape:
      raise ValueError(f'representative_data must have shape [N, '
                       f'*{input_shape}], got {rep.shape}.')
  analytic = {p: out.pop(p) for p in counters.PRECISIONS}
  for precision in counters.PRECISIONS:
    sec = deployed_cost(model, variables, input_shape, precision=precision,
                        representative_data=rep, measure=measure)
    sec['sram_study'] = analytic[precision]['sram_study']
    sec['sram_liveness_jaxpr'] = analytic[precision]['sram_liveness']
    if 'tflm_arena' in sec:
      for k in ('sram_study', 'sram_liveness', 'sram_liveness_jaxpr'):
        sec[k + '_error'] = _rel(sec[k], sec['tflm_arena'])
    if 'tflm_error' in sec:
      out['notes'].append(f'{precision}: {sec["tflm_error"]}')
    out[precision] = sec
  out['boards'] = {
      b.name: {p: boards_lib.fits(out, b, precision=p)
               for p in counters.PRECISIONS} for b in board_list}
  return out
