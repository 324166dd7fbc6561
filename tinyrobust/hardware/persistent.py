"""Estimate of TFLite Micro's persistent arena (the "tail").

Besides planned activations (the head), TFLM keeps per-model structures in
the arena's tail. Its `RecordingMicroAllocator` report splits them into:

  TfLiteEvalTensor data             24 B per tensor (every subgraph)
  Persistent TfLiteTensor data      64 B per model input/output tensor
  ... quantization data             32 B per int8 model input/output
  NodeAndRegistration struct        64 B per operator (every subgraph)
  Persistent buffer data            kernel OpData: a per-op constant plus,
                                    for conv/depthwise (any precision) and
                                    int8 fully-connected, two int32 arrays
                                    per output channel (multiplier, shift),
                                    each 16-byte aligned

plus unlisted allocations: the builtin-options struct of each op (`BUILTIN`)
and a fixed part (interpreter, allocator and subgraph bookkeeping, `BASE`,
`PER_SUBGRAPH` for each extra subgraph of a WHILE loop).

Calibration (how the constants were obtained): the per-tensor/per-node sizes
are read off the report. `OP_DATA` and `BUILTIN` come from single-op
flatbuffers (each op exported alone from a tiny JAX function, float32 and
int8, 6, 8 and 16 output channels): "Persistent buffer data" minus a ~28-32 B
per-model part, and the unlisted remainder minus 488 B; `BASE` = 488 + 32.
They were then checked, and ADD/MUL/CONCATENATION/WHILE adjusted by hand to
the residuals, on 9 small models x 2 precisions (the 'cnn' and 'mlp' registry
models at three sizes, a depthwise-separable net, a residual block, a dilated
1-D conv net, a scan RNN in both its WHILE and unrolled form), TFLM from the
`tflite-micro==0.dev20261023182759` wheel: tail error <= 1.7% on all 18
(mean +0.3%), +0.6% on a 4,949-op unrolled int8 FastRNN. Unknown ops get
`DEFAULT_OP`; the fixed parts may shift with other TFLM versions.
"""

from __future__ import annotations

from typing import Sequence

EVAL_TENSOR = 24
IO_TENSOR = 64
IO_QUANT = 32
NODE = 64
BASE = 520
PER_SUBGRAPH = 26

# op -> (OpData bytes, per-channel arrays in float32?, in int8?)
OP_DATA: dict[str, tuple[int, bool, bool]] = {
    'CONV_2D': (92, True, True),
    'DEPTHWISE_CONV_2D': (92, True, True),
    'FULLY_CONNECTED': (80, False, True),
    'ADD': (68, False, False),
    'SUB': (68, False, False),
    'MUL': (44, False, False),
    'REVERSE_V2': (0, False, False),
    'TANH': (24, False, False),
    'LOGISTIC': (24, False, False),
    'RELU': (40, False, False),
    'SUM': (47, False, False),
    'MEAN': (47, False, False),
    'REDUCE_MAX': (47, False, False),
    'MAX_POOL_2D': (32, False, False),
    'AVERAGE_POOL_2D': (32, False, False),
    'SOFTMAX': (84, False, False),
    'CONCATENATION': (80, False, False),
    'PAD': (64, False, False),
    'WHILE': (56, False, False),
    'RESHAPE': (0, False, False),
    'SLICE': (0, False, False),
    'PACK': (0, False, False),
    'LESS': (0, False, False),
    'MAXIMUM': (0, False, False),
    'MINIMUM': (0, False, False),
}
DEFAULT_OP = (48, False, False)

# op -> size of its builtin-options struct (TfLite*Params), bytes.
BUILTIN: dict[str, int] = {
    'CONV_2D': 28, 'DEPTHWISE_CONV_2D': 28, 'FULLY_CONNECTED': 32,
    'ADD': 8, 'SUB': 8, 'MUL': 4, 'SUM': 17, 'MEAN': 17, 'REDUCE_MAX': 17,
    'MAX_POOL_2D': 40, 'AVERAGE_POOL_2D': 40, 'SOFTMAX': 4,
    'CONCATENATION': 12, 'RESHAPE': 36, 'WHILE': 8, 'PACK': 8,
}


def _align16(n: int) -> int:
  return -(-n // 16) * 16


def estimate(ops: Sequence[tuple[str, int]], *, n_tensors: int, n_io: int,
             n_subgraphs: int, precision: str) -> int:
  """Predicted tail bytes.

  Args:
    ops: `(TFLite op name, output channels)` for every operator.
    n_tensors: tensors over all subgraphs (weights included).
    n_io: model inputs + outputs.
    n_subgraphs: subgraphs in the flatbuffer (1 without control flow).
    precision: 'float32' or 'int8'.

  Returns:
    Bytes.
  """
  int8 = precision == 'int8'
  total = BASE + PER_SUBGRAPH * (n_subgraphs - 1)
  total += EVAL_TENSOR * n_tensors + (IO_TENSOR + IO_QUANT * int8) * n_io
  for name, channels in ops:
    data, per_ch_float, per_ch_int8 = OP_DATA.get(name, DEFAULT_OP)
    if (per_ch_int8 if int8 else per_ch_float):
      data += 2 * _align16(4 * channels)  # int32 multiplier + shift arrays
    total += NODE + data + BUILTIN.get(name, 0)
  return int(total)


def from_tflite(graph, precision: str) -> int:
  """Tail estimate from a parsed flatbuffer (`tflite_graph.TfliteGraph`)."""
  ops = []
  for sg in graph.subgraphs:
    for op in sg.ops:
      out = [sg.tensors[i] for i in op.outputs if i >= 0]
      ch = out[0].shape[-1] if out and out[0].shape else 1
      ops.append((op.name, int(ch)))
  g0 = graph.subgraphs[0]
  return estimate(ops, n_tensors=sum(len(s.tensors) for s in graph.subgraphs),
                  n_io=len(g0.inputs) + len(g0.outputs),
                  n_subgraphs=len(graph.subgraphs), precision=precision)


# jaxpr primitive of a layer head -> the TFLite op it becomes, and how many
# constant tensors (weights, bias, shape/axes) it brings.
_JAXPR_OPS = {
    'dot_general': ('FULLY_CONNECTED', 2), 'add': ('ADD', 0),
    'sub': ('SUB', 0), 'mul': ('MUL', 0), 'div': ('DIV', 0),
    'max': ('MAXIMUM', 0), 'min': ('MINIMUM', 0), 'square': ('MUL', 0),
    'integer_pow': ('MUL', 0), 'reduce_sum': ('SUM', 1),
    'reduce_max': ('REDUCE_MAX', 1), 'tanh': ('TANH', 0),
    'logistic': ('LOGISTIC', 0), 'exp': ('EXP', 0), 'sqrt': ('SQRT', 0),
    'rsqrt': ('RSQRT', 0), 'reshape': ('RESHAPE', 1),
    'squeeze': ('RESHAPE', 1), 'expand_dims': ('RESHAPE', 1),
    'concatenate': ('CONCATENATION', 0), 'pad': ('PAD', 1),
    'transpose': ('TRANSPOSE', 1), 'slice': ('SLICE', 2),
    'dynamic_slice': ('SLICE', 2), 'select_n': ('SELECT_V2', 0),
    'argmax': ('ARG_MAX', 1), 'reduce_window_max': ('MAX_POOL_2D', 0),
    'reduce_window_sum': ('AVERAGE_POOL_2D', 0), 'while': ('WHILE', 0),
    'lt': ('LESS', 1), 'pack': ('PACK', 0), 'broadcast_in_dim': (
        'BROADCAST_TO', 1),
}


def from_layers(layers: Sequence[dict], *, n_subgraphs: int,
                precision: str) -> int:
  """Tail estimate from `counters` layer rows (no export needed).

  Each layer becomes one TFLite op (a conv becomes CONV_2D, or
  DEPTHWISE_CONV_2D when `depthwise`; a 1-D conv also gets a RESHAPE), with
  its output tensor and constant tensors. Rows may be bare `{'op': name}`
  (loop-control ops added by `counters`).
  """
  ops, n_tensors = [], 1  # the model input
  for r in layers:
    ch = r['out_shape'][0][-1] if r.get('out_shape') and r['out_shape'][0] \
        else 1
    if r['op'] == 'conv_general_dilated':
      name, consts = ('DEPTHWISE_CONV_2D' if r.get('depthwise')
                      else 'CONV_2D'), 2
      if r.get('spatial_dims') == 1:
        ops.append(('RESHAPE', 1))
        n_tensors += 2
    else:
      name, consts = _JAXPR_OPS.get(r['op'], (r['op'].upper(), 0))
      consts = max(consts, r.get('const_inputs', 0))
    ops.append((name, int(ch)))
    n_tensors += len(r.get('out_shape') or [0]) + consts
  return estimate(ops, n_tensors=n_tensors, n_io=2, n_subgraphs=n_subgraphs,
                  precision=precision)
