"""Where the int8 graph quantises: a static plan of a flattened model.

`Planner().run(graph, static)` walks a `hardware.graph.Graph` with its
x-independent values made concrete and records the quantisation points of
the full-integer TFLite graph (the rules are in `fakequant.py`'s docstring):
weights per output channel, other array constants per tensor, and the
activations the int8 graph materialises (ops the converter fuses are not
quantised in between). Paths are eqn indices, `(i,)` or `(i, j)` inside a
scan.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from tinyrobust.hardware import graph as graph_lib

# TFLite's int8 LOGISTIC / TANH kernels have fixed output quantisation.
FIXED_OUTPUT = {'logistic': (1.0 / 256.0, -128), 'tanh': (1.0 / 128.0, 0)}
# Ops whose int8 output shares its input's quantisation.
PASS_THROUGH = frozenset({
    'reshape', 'squeeze', 'expand_dims', 'broadcast_in_dim', 'transpose',
    'slice', 'dynamic_slice', 'rev', 'pad', 'copy', 'copy_p',
    'convert_element_type', 'reduce_max', 'reduce_min', 'reduce_precision',
    'gather', 'select_n', 'stop_gradient', 'optimization_barrier'})
ACCUMULATORS = frozenset({'conv_general_dilated', 'dot_general'})
AFFINE = frozenset({'add', 'sub', 'mul', 'div'})
BINARY = frozenset({'add', 'sub', 'mul'})  # TFLite ops with fused ReLU


@dataclasses.dataclass
class Plan:
  """Quantisation points by eqn path (`(i,)`, or `(i, j)` inside a scan).

  Attributes:
    weights: path -> {operand index: per-channel axis or None}.
    consts: path -> operand indices of other constants (per-tensor int8).
    acts: path -> 'calibrated', 'logistic' or 'tanh'.
    prims: path -> primitive name (checked when a new shape is traced).
  """
  weights: dict[tuple[int, ...], dict[int, int | None]]
  consts: dict[tuple[int, ...], list[int]]
  acts: dict[tuple[int, ...], str]
  prims: dict[tuple[int, ...], str]


def _is_float(dtype) -> bool:
  return jnp.issubdtype(dtype, jnp.floating)


def _per_channel_const(v) -> bool:
  """A constant that varies at most along the last axis (foldable into a
  convolution's per-output-channel weights and bias)."""
  a = np.asarray(v)
  if a.ndim == 0 or a.size == 1:
    return True
  flat = a.reshape(-1, a.shape[-1])
  return bool(np.all(flat == flat[:1]))


def _conv1d(e: graph_lib.Eqn) -> bool:
  return (e.primitive == 'conv_general_dilated'
          and len(e.params['dimension_numbers'].lhs_spec) == 3)


def _dot_axis(e: graph_lib.Eqn, k: int, rank: int) -> int | None:
  (lc, rc), (lb, rb) = e.params['dimension_numbers']
  used = set(lc if k == 0 else rc) | set(lb if k == 0 else rb)
  free = [a for a in range(rank) if a not in used]
  return free[0] if len(free) == 1 else None


class Planner:
  """Walks a program with concrete constants; records quantisation points.

  A dynamic value's `state` says which fused TFLite op it ends: 'acc' (a
  conv/matmul, possibly with folded per-channel affine ops), 'binary' (an
  add/sub/mul of two activations), 'relu' / 'relu6' (a fused activation).
  """

  def __init__(self):
    self.plan = Plan({}, {}, {}, {})

  def run(self, prog: graph_lib.Graph, static: dict[int, Any],
          path=()) -> None:
    """`static`: value id -> concrete value for x-independent values."""
    self.val = dict(static)
    self.val.update(prog.consts)
    self.prog, self.state, self.consumers, self.shape = prog, {}, {}, {}
    for i, e in enumerate(prog.eqns):
      self.shape.update((o, prog.values[o].shape) for o in e.outvars)
      for r in e.invars:
        if r not in prog.consts:
          self.consumers.setdefault(r, []).append(i)
    for r in prog.outputs:
      if r not in prog.consts:
        self.consumers.setdefault(r, []).append(-1)
    dynamic = []
    for i, e in enumerate(prog.eqns):  # constants first: consumers look ahead
      if all(self.static(r) for r in e.invars) and e.primitive != 'scan':
        outs = e.prim.bind(*[self.get(r) for r in e.invars], **e.params)
        self.val.update(zip(e.outvars, outs if e.prim.multiple_results
                            else [outs]))
      else:
        dynamic.append(i)
    for i in dynamic:
      e, p = prog.eqns[i], path + (i,)
      self.plan.prims[p] = e.primitive
      if e.primitive == 'scan':
        nc = e.params['num_consts']
        inner = {b: self.get(r) for b, r in zip(e.body.inputs[:nc],
                                                e.invars[:nc])
                 if self.static(r)}
        saved = (self.val, self.prog, self.state, self.consumers, self.shape)
        self.run(e.body, inner, p)
        self.val, self.prog, self.state, self.consumers, self.shape = saved
        continue
      self._operands(p, e)
      if len(e.outvars) == 1 and _is_float(
          self.prog.values[e.outvars[0]].dtype):
        self._activation(p, e)

  def static(self, r: int) -> bool:
    return r in self.val

  def get(self, r: int):
    return self.val.get(r)

  def _operands(self, p, e: graph_lib.Eqn) -> None:
    """Weights of conv/matmul per channel; other array constants per
    tensor (affine constants fold into the preceding op or stay float)."""
    name = e.primitive
    const = [k for k, r in enumerate(e.invars) if self.static(r)
             and np.size(self.get(r)) > 1
             and _is_float(jnp.result_type(self.get(r)))]
    if not const:
      return
    if name == 'conv_general_dilated':
      self.plan.weights[p] = {
          k: e.params['dimension_numbers'].rhs_spec[0] if k == 1 else None
          for k in const}
    elif name == 'dot_general':
      self.plan.weights[p] = {
          k: _dot_axis(e, k, np.ndim(self.get(e.invars[k]))) for k in const}
    elif name not in PASS_THROUGH and name not in AFFINE:
      self.plan.consts[p] = const

  def _activation(self, p, e: graph_lib.Eqn) -> None:
    name, out = e.primitive, e.outvars[0]
    dyn = [r for r in e.invars if not self.static(r)]
    src = self.state.get(dyn[0]) if len(dyn) == 1 else None
    if name in ACCUMULATORS:
      self.state[out] = 'conv1d' if _conv1d(e) else 'acc'
    elif self._fuses(e, dyn[0] if len(dyn) == 1 else None, src):
      self.state[out] = {'max': 'relu', 'min': 'relu6'}.get(name, 'acc')
    elif name in BINARY:  # its own ADD/SUB/MUL op (fuses a ReLU)
      self.state[out] = 'binary'
      const = [k for k, r in enumerate(e.invars) if self.static(r)
               and np.size(self.get(r)) > 1]
      if const:  # an int8 constant operand (e.g. a 1-D conv's bias)
        self.plan.consts[p] = const
    if name in PASS_THROUGH:
      return
    users = self.consumers.get(out, [])
    if len(users) == 1 and users[0] >= 0 and self._fuses(
        self.prog.eqns[users[0]], out, self.state.get(out)):
      return  # folded into its single consumer: no int8 tensor here
    self.plan.acts[p] = name if name in FIXED_OUTPUT else 'calibrated'

  def _fuses(self, c: graph_lib.Eqn, dyn, src) -> bool:
    """Whether op `c`, reading the activation `dyn` that ends a fused op of
    state `src`, folds into that op (no int8 tensor between them)."""
    if dyn is None or src is None:
      return False
    if c.primitive in AFFINE and src == 'acc':
      other = [r for r in c.invars if r != dyn]
      return (len(other) == 1 and self.static(other[0])
              and not (c.primitive == 'div' and c.invars[0] != dyn)
              and _per_channel_const(self.get(other[0]))
              and tuple(self.prog.values[c.outvars[0]].shape)
              == tuple(self.shape.get(dyn, ())))
    if c.primitive == 'max' and src in ('acc', 'binary'):
      return self._bound(c, 0.0)
    if c.primitive == 'min' and src == 'relu':
      return self._bound(c, 6.0)
    return False

  def _bound(self, e: graph_lib.Eqn, bound: float) -> bool:
    """`max(x, 0)` / `min(x, 6)` with a scalar constant bound."""
    consts = [self.get(r) for r in e.invars if self.static(r)]
    return (len(e.invars) == 2 and len(consts) == 1 and np.size(consts[0]) == 1
            and float(np.asarray(consts[0]).reshape(())) == bound)
