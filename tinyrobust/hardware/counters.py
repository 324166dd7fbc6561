"""Analytic cost counters derived from a model's jaxpr (no per-model formulas).

`count(model, variables, input_shape)` walks the flattened jaxpr of
`model.apply(variables, x, train=False)` (see `graph.py`) and returns
parameters, MACs, FLOPs, a per-layer table and two SRAM estimates.

Counting conventions (chosen to match what XLA's `cost_analysis()` and TFLite
Micro's reference kernels execute):
- `conv_general_dilated`: one MAC per (output element, kernel tap, input
  channel of its group) whose tap falls inside the input; taps on zero padding
  are skipped, as XLA and TFLM do. `macs_dense` also counts them (the usual
  textbook figure). `feature_group_count` gives depthwise convs their I/G.
- `dot_general`: output elements x contracted size.
- FLOPs = 2 x MACs + one per output element of each elementwise op + one per
  reduced element; transcendental ops (exp, tanh, logistic, rsqrt, ...) are
  counted apart in `transcendentals`, as XLA does (logistic also costs 3
  FLOPs: it is 1 / (1 + exp(-x))). Loops multiply their body by the trip
  count.
- Only values that depend on `x` cost anything: computations on weights alone
  (batch-norm folding) are constant-folded by the TFLite converter.

Layers: an op that makes a new activation tensor starts a layer, as in the
TFLite graph; ops with one activation operand that nobody else reads are fused
into the layer that produced it where the TFLite converter fuses them
(`FUSED_ACTIVATIONS`, `FOLDED_AFFINE` after `FOLDS_AFFINE`, dtype casts).
`sram_study` is the study's proxy (max over layers of input + output activation
bytes); `activation_arena` is the greedy TFLM plan over the layer tensors'
lifetimes (`planner.py`), and `sram_liveness` adds the persistent-allocation
estimate of `persistent.py`.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from tinyrobust.hardware import graph as graph_lib
from tinyrobust.hardware import persistent
from tinyrobust.hardware import planner
from tinyrobust.hardware import shapes

PRECISIONS = ('float32', 'int8')

TRANSCENDENTAL = frozenset({
    'exp', 'exp2', 'log', 'log1p', 'expm1', 'tanh', 'logistic', 'sqrt',
    'rsqrt', 'cbrt', 'pow', 'sin', 'cos', 'tan', 'atan2', 'erf', 'erfc',
    'erf_inv', 'asin', 'acos', 'atan', 'sinh', 'cosh', 'asinh', 'acosh',
    'atanh'})
ELEMENTWISE = frozenset({
    'add', 'add_any', 'sub', 'mul', 'div', 'rem', 'max', 'min', 'neg', 'abs',
    'sign', 'floor', 'ceil', 'round', 'square', 'integer_pow', 'select_n',
    'clamp', 'eq', 'ne', 'lt', 'le', 'gt', 'ge', 'and', 'or', 'not', 'xor',
    'nextafter', 'is_finite'}) | TRANSCENDENTAL
REDUCTIONS = frozenset({'reduce_sum', 'reduce_max', 'reduce_min',
                        'reduce_prod', 'argmax', 'argmin', 'reduce_and',
                        'reduce_or', 'cumsum', 'cumprod', 'cummax', 'cummin'})
# Ops that only relabel memory (no kernel work, no new buffer when fused).
RELABEL = frozenset({'convert_element_type', 'copy', 'copy_p',
                     'reduce_precision', 'stop_gradient',
                     'optimization_barrier'})
# How the TFLite converter fuses elementwise ops with one activation operand:
# clamps (ReLU/ReLU6) become the producer's fused activation; affine ops with
# a constant (bias, batch norm, a mean's 1/n) are folded into the weights of
# the conv/dense they follow (or of the dense after a global mean). Anything
# else (tanh, logistic, exp, x*x, ...) is an op with its own output tensor.
FUSED_ACTIVATIONS = frozenset({'max', 'min', 'clamp'})
FOLDED_AFFINE = frozenset({'add', 'sub', 'mul', 'div'})
FOLDS_AFFINE = frozenset({'conv_general_dilated', 'dot_general', 'reduce_sum'})
# Shape changes: TFLite emits a RESHAPE op with its own output tensor.
RESHAPES = frozenset({'reshape', 'squeeze', 'expand_dims'})


def _valid_taps(n_in: int, n_out: int, k: int, stride: int, rhs_dil: int,
                lhs_dil: int, pad_lo: int) -> int:
  """(output, tap) pairs along one spatial axis that read a real input."""
  o = np.arange(n_out)[:, None]
  t = np.arange(k)[None, :]
  p = o * stride + t * rhs_dil - pad_lo
  ok = (p >= 0) & (p <= (n_in - 1) * lhs_dil) & (p % lhs_dil == 0)
  return int(ok.sum())


def conv_macs(lhs_shape, rhs_shape, out_shape, params) -> tuple[int, int]:
  """(executed MACs, dense MACs) of one `conv_general_dilated`."""
  dn = params['dimension_numbers']
  lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
  n_out_feat = rhs_shape[rhs_spec[0]]
  n_in_per_group = rhs_shape[rhs_spec[1]]
  batch = out_shape[out_spec[0]]
  spatial_rhs = [rhs_shape[d] for d in rhs_spec[2:]]
  dense = int(np.prod(out_shape, dtype=np.int64)) * n_in_per_group * int(
      np.prod(spatial_rhs, dtype=np.int64))
  taps = 1
  lhs_dil = params.get('lhs_dilation') or (1,) * len(spatial_rhs)
  rhs_dil = params.get('rhs_dilation') or (1,) * len(spatial_rhs)
  for i, k in enumerate(spatial_rhs):
    taps *= _valid_taps(lhs_shape[lhs_spec[2 + i]], out_shape[out_spec[2 + i]],
                        k, params['window_strides'][i], rhs_dil[i], lhs_dil[i],
                        params['padding'][i][0])
  return batch * n_out_feat * n_in_per_group * taps, dense


def _integer_pow_flops(y: int) -> int:
  y = abs(int(y))
  return max(1, y.bit_length() - 1 + bin(y).count('1') - 1)


def eqn_cost(e: graph_lib.Eqn, values) -> dict[str, int]:
  """MACs / FLOPs / transcendentals of one equation (loops: body x trips)."""
  c = {'macs': 0, 'macs_dense': 0, 'flops': 0, 'transcendentals': 0}
  if not any(values[i].dynamic for i in e.invars) and e.body is None:
    return c
  out = values[e.outvars[0]] if e.outvars else None
  if e.primitive == 'conv_general_dilated':
    m, d = conv_macs(values[e.invars[0]].shape, values[e.invars[1]].shape,
                     out.shape, e.params)
    c.update(macs=m, macs_dense=d, flops=2 * m)
  elif e.primitive == 'dot_general':
    (lc, _), _ = e.params['dimension_numbers']
    k = int(np.prod([values[e.invars[0]].shape[a] for a in lc],
                    dtype=np.int64))
    c.update(macs=out.size * k, macs_dense=out.size * k,
             flops=2 * out.size * k)
  elif e.primitive == 'logistic':
    # 1 / (1 + exp(-x)): one exp plus neg, add, div (XLA expands it so too).
    c.update(transcendentals=out.size, flops=3 * out.size)
  elif e.primitive in TRANSCENDENTAL:
    c['transcendentals'] = out.size
  elif e.primitive == 'integer_pow':
    c['flops'] = out.size * _integer_pow_flops(e.params['y'])
  elif e.primitive in ELEMENTWISE:
    c['flops'] = out.size
  elif e.primitive in REDUCTIONS:
    c['flops'] = max(values[e.invars[0]].size - out.size, out.size)
  elif e.body is not None:
    for b in e.body.eqns:
      for k, v in eqn_cost(b, e.body.values).items():
        c[k] += v * e.trips
  return c


def _bytes(v: graph_lib.Value, precision: str) -> int:
  if np.issubdtype(v.dtype, np.floating):
    return v.size * (4 if precision == 'float32' else 1)
  return v.size * np.dtype(v.dtype).itemsize


def _layers(g: graph_lib.Graph):
  """Assigns activation buffers and groups equations into layers.

  Returns:
    (buffer_of: value id -> buffer id, buffers: buffer id -> value id of its
    first value, layers: list of (head eqn index, [eqn indices])).
  """
  uses: dict[int, int] = {}
  for e in g.eqns:
    for i in e.invars:
      uses[i] = uses.get(i, 0) + 1
  for i in g.outputs:
    uses[i] = uses.get(i, 0) + 1
  buffer_of: dict[int, int] = {}
  buffers: dict[int, int] = {}
  owner: dict[int, int] = {}  # buffer id -> layer index
  layers: list[tuple[int, list[int]]] = []
  for i in g.inputs:
    if g.values[i].dynamic:
      buffer_of[i] = i
      buffers[i] = i
  for n, e in enumerate(g.eqns):
    dyn_in = [i for i in e.invars if g.values[i].dynamic]
    dyn_out = [o for o in e.outvars if g.values[o].dynamic]
    if not dyn_out:
      continue
    src = dyn_in[0] if len(dyn_in) == 1 else None
    producer = (g.eqns[layers[owner[buffer_of[src]]][0]].primitive
                if src is not None and buffer_of[src] in owner else None)
    fusable = (e.primitive in FUSED_ACTIVATIONS or e.primitive in RELABEL or
               (e.primitive in FOLDED_AFFINE and producer in FOLDS_AFFINE))
    if (fusable and producer is not None and len(dyn_out) == 1
        and g.values[dyn_out[0]].size == g.values[src].size
        and uses.get(src, 0) == 1):
      buffer_of[dyn_out[0]] = buffer_of[src]
      layers[owner[buffer_of[src]]][1].append(n)
      continue
    if (e.primitive in RELABEL | RESHAPES and src is not None
        and g.values[dyn_out[0]].shape == g.values[src].shape):
      buffer_of[dyn_out[0]] = buffer_of[src]  # a no-op
      continue
    if e.primitive in RELABEL and src is not None:
      buffer_of[dyn_out[0]] = buffer_of[src]
      continue
    layers.append((n, [n]))
    for o in dyn_out:
      buffer_of[o] = o
      buffers[o] = o
      owner[o] = len(layers) - 1
  return buffer_of, buffers, layers


def _rows(g: graph_lib.Graph, buffer_of, layers) -> list[dict[str, Any]]:
  """One dict per layer: name, op, shapes, activation sizes, costs."""
  vals = g.values
  rows = []
  for head, members in layers:
    e = g.eqns[head]
    cost = {'macs': 0, 'macs_dense': 0, 'flops': 0, 'transcendentals': 0}
    for n in members:
      for k, v in eqn_cost(g.eqns[n], vals).items():
        cost[k] += v
    ins = sorted({buffer_of[i] for i in e.invars if vals[i].dynamic})
    outs = [o for o in e.outvars if vals[o].dynamic]
    rows.append({
        'name': e.name or e.primitive, 'op': e.primitive,
        'out_shape': [list(vals[o].shape) for o in outs],
        'act_in': int(sum(vals[b].size for b in ins)),
        'act_out': int(sum(vals[o].size for o in outs)),
        'depthwise': bool(e.primitive == 'conv_general_dilated' and
                          e.params['feature_group_count'] > 1),
        'spatial_dims': (len(e.params['dimension_numbers'].lhs_spec) - 2
                         if e.primitive == 'conv_general_dilated' else 0),
        'const_inputs': sum(1 for i in e.invars if not vals[i].dynamic),
        'inputs': ins, 'outputs': outs, **cost})
  return rows


def _loop_ops(g: graph_lib.Graph, precision: str) -> list[dict[str, Any]]:
  """Layer rows the TFLite graph adds for loops (bodies, loop control).

  float32 exports a scan as WHILE + cond/body subgraphs (loop control: LESS,
  MAXIMUM, MINIMUM, PACK, SLICE, RESHAPE, ADD counter); int8 export unrolls
  it: the body once per step plus a SLICE and RESHAPE of x[t].
  """
  extra = []
  for e in g.eqns:
    if e.body is None:
      continue
    b_of, _, b_layers = _layers(e.body)
    body = _rows(e.body, b_of, b_layers) + _loop_ops(e.body, precision)
    if precision == 'int8':
      step = body + [{'op': 'slice'}, {'op': 'reshape'}]
      extra += step * e.trips
    else:
      extra += body + [{'op': n} for n in ('while', 'lt', 'max', 'min',
                                           'pack', 'slice', 'reshape', 'add')]
  return extra


def _body_peak(g: graph_lib.Graph, precision: str) -> int:
  """Planned arena of a loop body run on its own (TFLM: a subgraph)."""
  bufs = []
  for i in g.inputs:
    if g.values[i].dynamic:
      bufs.append((_bytes(g.values[i], precision), -1, len(g.eqns)))
  for n, e in enumerate(g.eqns):
    for o in e.outvars:
      if g.values[o].dynamic:
        last = max([m for m, f in enumerate(g.eqns) if o in f.invars] + [n])
        if o in g.outputs:
          last = len(g.eqns)
        bufs.append((_bytes(g.values[o], precision), n, last))
  return planner.greedy_plan(bufs)


def count(model, variables, input_shape) -> dict[str, Any]:
  """Analytic counters of `model` on one example of shape `input_shape`.

  Args:
    model: Flax linen module with `__call__(x, train=False)`.
    variables: its variables (`params` and optional `batch_stats`).
    input_shape: one example's shape without the batch axis (the MCU runs
      batch 1), e.g. `(32, 32, 3)` or `(100, 6)`; checked by
      `shapes.example_shape` (a batch axis is named when the model declares
      its shape).

  Returns:
    A dict with `params` (trainable scalars), `param_bytes` per precision,
    `macs`, `macs_dense`, `flops`, `transcendentals`, `layers` (one dict per
    layer: name, op, out_shape, macs, flops, act_in/act_out elements), and per
    precision (`float32`, `int8`) the activation-memory estimates in bytes:
    `sram_study`, `activation_arena`, `persistent_estimate`, `sram_liveness`.
  """
  input_shape = shapes.example_shape(input_shape, model)
  g = graph_lib.trace_model(model, variables, input_shape)
  vals = g.values
  buffer_of, buffers, layers = _layers(g)

  rows = _rows(g, buffer_of, layers)
  totals = {'macs': 0, 'macs_dense': 0, 'flops': 0, 'transcendentals': 0}
  # Totals over every equation, so no cost hides outside a layer.
  for e in g.eqns:
    for k, v in eqn_cost(e, vals).items():
      totals[k] += v

  leaves = jax.tree_util.tree_leaves(
      variables.get('params', variables) if hasattr(variables, 'get')
      else variables)
  n_params = int(sum(np.size(l) for l in leaves))
  out = {
      'params': n_params,
      'param_bytes': {'float32': 4 * n_params, 'int8': n_params},
      **{k: int(v) for k, v in totals.items()},
      'layers': [{k: v for k, v in r.items() if k not in ('inputs', 'outputs')}
                 for r in rows],
      'notes': sorted(set(g.notes)),
  }
  n_loops = sum(1 for head, _ in layers if g.eqns[head].body is not None)
  layer_rows = [{k: v for k, v in r.items() if k not in ('inputs', 'outputs')}
                for r in rows]
  for p in PRECISIONS:
    study = 0
    for r in rows:
      b_in = sum(_bytes(vals[b], p) for b in r['inputs'])
      b_out = sum(_bytes(vals[o], p) for o in r['outputs'])
      study = max(study, b_in + b_out)
    arena = _arena(g, buffer_of, buffers, layers, p)
    tail = persistent.from_layers(
        layer_rows + _loop_ops(g, p),
        n_subgraphs=1 + (2 * n_loops if p == 'float32' else 0), precision=p)
    out[p] = {'sram_study': int(study), 'activation_arena': int(arena),
              'persistent_estimate': int(tail),
              'sram_liveness': int(arena + tail)}
  return out


def _arena(g, buffer_of, buffers, layers, precision) -> int:
  """Greedy TFLM plan of the layer tensors (+ loop bodies while they run)."""
  layer_of = {}
  for li, (_, members) in enumerate(layers):
    for n in members:
      layer_of[n] = li
  first = {b: -1 if b in g.inputs else None for b in buffers}
  last = dict.fromkeys(buffers, -1)
  for li, (head, _) in enumerate(layers):
    for o in g.eqns[head].outvars:
      if o in buffers:
        first[o] = li
  for n, e in enumerate(g.eqns):
    for i in e.invars:
      b = buffer_of.get(i)
      if b is not None:
        last[b] = max(last[b], layer_of.get(n, last[b]))
  for i in g.outputs:
    b = buffer_of.get(i)
    if b is not None:
      last[b] = len(layers)
  bufs = []
  for b in buffers:
    if first[b] is None:
      continue
    bufs.append((_bytes(g.values[b], precision), first[b],
                 max(last[b], first[b])))
  for li, (head, _) in enumerate(layers):
    e = g.eqns[head]
    if e.body is not None:
      # TFLM's WHILE copies every loop variable into the body subgraph and
      # out again: the full sequence and weights-derived activations passed
      # to a scan exist once more while it runs.
      n_const = e.params.get('num_consts', e.params.get('body_nconsts', 0))
      n_carry = e.params.get('num_carry', 0)
      passed = [i for k, i in enumerate(e.invars)
                if g.values[i].dynamic and not n_const <= k < n_const + n_carry]
      extra = sum(_bytes(g.values[i], precision) for i in passed)
      if precision == 'int8':
        extra = 0  # int8 export unrolls the loop: no WHILE copies
      bufs.append((_body_peak(e.body, precision) + extra, li, li))
  return planner.greedy_plan(bufs)
