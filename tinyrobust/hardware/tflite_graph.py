"""Reads a TFLite flatbuffer's graph and predicts the TFLM arena from it.

`parse` turns the flatbuffer (schema from the `tflite_micro` package) into
plain records: per subgraph, tensors (bytes, constant or not) and operators in
execution order. `planned_arena` replays TFLM's planning on that graph: every
non-constant tensor lives from the op that writes it (graph inputs: from the
start) to the last op that reads it (graph outputs: to the end), and
`planner.greedy_plan` lays them out. Control-flow ops (WHILE, IF, CALL_ONCE)
hold their called subgraphs' plans for the duration of the op.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from tinyrobust.hardware import planner

_ITEMSIZE = {'FLOAT32': 4, 'FLOAT16': 2, 'INT32': 4, 'UINT8': 1, 'INT64': 8,
             'STRING': 1, 'BOOL': 1, 'INT16': 2, 'COMPLEX64': 8, 'INT8': 1,
             'FLOAT64': 8, 'COMPLEX128': 16, 'UINT64': 8, 'RESOURCE': 0,
             'VARIANT': 0, 'UINT32': 4, 'UINT16': 2, 'INT4': 1, 'BFLOAT16': 2}


@dataclasses.dataclass
class Tensor:
  name: str
  shape: tuple[int, ...]
  dtype: str
  nbytes: int
  constant: bool  # backed by flatbuffer data (weights)
  quantized: bool
  n_channels_quant: int  # number of per-channel scales


@dataclasses.dataclass
class Op:
  name: str
  inputs: list[int]
  outputs: list[int]
  subgraphs: list[int]  # called subgraphs (control flow)


@dataclasses.dataclass
class Subgraph:
  tensors: list[Tensor]
  ops: list[Op]
  inputs: list[int]
  outputs: list[int]


@dataclasses.dataclass
class TfliteGraph:
  subgraphs: list[Subgraph]

  @property
  def op_names(self) -> list[str]:
    return [o.name for s in self.subgraphs for o in s.ops]


@functools.lru_cache(maxsize=None)
def _schema():
  from tflite_micro.tensorflow.lite.micro.python import schema_py_generated  # pylint: disable=g-import-not-at-top
  return schema_py_generated


def _enum_names(cls) -> dict[int, str]:
  return {v: k for k, v in vars(cls).items()
          if not k.startswith('_') and isinstance(v, int)}


def parse(tflite_bytes: bytes) -> TfliteGraph:
  """Parses a TFLite flatbuffer into `TfliteGraph`."""
  s = _schema()
  model = s.ModelT.InitFromObj(
      s.Model.GetRootAsModel(bytearray(tflite_bytes), 0))
  op_names = _enum_names(s.BuiltinOperator)
  types = _enum_names(s.TensorType)
  codes = []
  for c in model.operatorCodes:
    code = max(c.builtinCode, c.deprecatedBuiltinCode)
    if op_names.get(code) == 'CUSTOM':
      codes.append('CUSTOM:' + (c.customCode or b'').decode())
    else:
      codes.append(op_names.get(code, f'BUILTIN_{code}'))
  subgraphs = []
  for sg in model.subgraphs:
    tensors = []
    for t in sg.tensors or []:
      shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
      dtype = types.get(t.type, str(t.type))
      buf = model.buffers[t.buffer] if t.buffer < len(model.buffers) else None
      has_data = buf is not None and (
          (buf.data is not None and len(buf.data) > 0) or (buf.size or 0) > 0)
      q = t.quantization
      scales = 0 if q is None or q.scale is None else len(q.scale)
      tensors.append(Tensor(
          name=(t.name or b'').decode(errors='replace'), shape=shape,
          dtype=dtype,
          nbytes=int(np.prod(shape, dtype=np.int64)) * _ITEMSIZE.get(dtype, 4),
          constant=bool(has_data), quantized=scales > 0,
          n_channels_quant=scales))
    ops = []
    for o in sg.operators or []:
      opts = o.builtinOptions
      called = [int(getattr(opts, k)) for k in (
          'condSubgraphIndex', 'bodySubgraphIndex', 'thenSubgraphIndex',
          'elseSubgraphIndex', 'initSubgraphIndex') if hasattr(opts, k)]
      ins = [] if o.inputs is None else [int(i) for i in o.inputs]
      outs = [] if o.outputs is None else [int(i) for i in o.outputs]
      ops.append(Op(codes[o.opcodeIndex], ins, outs, called))
    subgraphs.append(Subgraph(tensors, ops, [int(i) for i in sg.inputs],
                              [int(i) for i in sg.outputs]))
  return TfliteGraph(subgraphs)


def _scratch(sg: Subgraph, op: Op) -> list[int]:
  """Scratch bytes the TFLM reference kernel of `op` requests in Prepare.

  Reductions ask for two int index arrays of the input's rank (measured: a
  rank-4 SUM adds 2 x 16 aligned bytes), int8 SUM/MEAN also for int32
  accumulators; the other kernels the exporter emits
  for the zoo (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, ...) request
  none with the reference kernels.
  """
  if op.name in ('SUM', 'MEAN', 'REDUCE_MAX', 'REDUCE_MIN', 'REDUCE_PROD'):
    x = sg.tensors[op.inputs[0]]
    out = [4 * len(x.shape), 4 * len(x.shape)]
    if x.dtype == 'INT8' and op.name in ('SUM', 'MEAN'):
      # int32 accumulators, one per output element (measured).
      y = sg.tensors[op.outputs[0]]
      out.append(4 * int(np.prod(y.shape, dtype=np.int64)))
    return out
  return []


def lifetimes(g: TfliteGraph) -> list[tuple[int, int, int]]:
  """`(bytes, first_scope, last_scope)` of every buffer TFLM plans.

  Mirrors `AllocationInfoBuilder::MarkAllocationLifetimes`: scope 0 is the
  start of subgraph 0, every op opens a new scope, control-flow ops mark their
  called subgraphs inside their own span; graph inputs live from the start and
  outputs to the end. Buffers come in TFLM's order: tensors by (subgraph,
  index), then scratch buffers in op order.
  """
  info: dict[tuple[int, int], list[int]] = {}
  scratch: list[tuple[int, int, int]] = []

  def first(key, scope):
    info[key] = [scope, scope]

  def last(key, scope):
    info.setdefault(key, [-1, -1])[1] = scope

  def mark(si: int, scope: int) -> int:
    sg = g.subgraphs[si]
    for t in sg.inputs + sg.outputs:
      first((si, t), scope)
    for op in sg.ops:
      scope += 1
      for t in op.outputs:
        first((si, t), scope)
      start = scope
      for called in op.subgraphs:
        scope = mark(called, scope + 1)
      for t in op.inputs:
        if t >= 0:
          last((si, t), scope)
      for t in op.outputs:
        last((si, t), scope)
      scratch.extend((n, start, scope) for n in _scratch(sg, op))
    for t in sg.outputs:
      last((si, t), scope)
    return scope

  mark(0, 0)
  out = []
  for si, sg in enumerate(g.subgraphs):
    for ti, t in enumerate(sg.tensors):
      f, l = info.get((si, ti), (-1, -1))
      if t.constant or t.nbytes == 0 or f < 0:
        continue
      out.append((t.nbytes, f, l))
  return out + scratch


def planned_arena(g: TfliteGraph) -> int:
  """Head bytes TFLM's greedy planner is predicted to use."""
  return planner.greedy_plan(lifetimes(g))
