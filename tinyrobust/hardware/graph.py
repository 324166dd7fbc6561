"""Flattens a model's jaxpr into one list of primitive equations.

`trace_model` traces `model.apply(variables, x, train=False)` with
`jax.make_jaxpr` and inlines every call-like sub-jaxpr (`jit`/`pjit`,
`closed_call`, `custom_jvp_call`, `custom_vjp_call`, `remat`), so the counters
in `counters.py` see one flat, execution-ordered program. Loops stay single
equations holding their flattened body (`scan` knows its trip count; a
`while` loop's is unknown and counted once, flagged in `Graph.notes`).

Every value gets an integer id; `Value.dynamic` says whether it depends on the
input `x` (weights, constants and anything computed only from them are folded
away by the TFLite converter, so they cost no activation memory or FLOPs).

`flatten` is the one jaxpr flattener of the package: the counters use it via
`trace_model`, and the fake-quantised forward pass (`fakequant.py`) evaluates
its `Graph` (each `Eqn` keeps its primitive, `Graph.consts` the literals and
closed-over constants).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np

# Primitives whose sub-jaxpr is executed exactly once, inline.
_INLINE_KEYS = {
    'jit': 'jaxpr', 'pjit': 'jaxpr', 'closed_call': 'call_jaxpr',
    'core_call': 'call_jaxpr', 'custom_jvp_call': 'call_jaxpr',
    'custom_vjp_call': 'call_jaxpr', 'custom_vjp_call_jaxpr': 'fun_jaxpr',
    'remat': 'jaxpr', 'checkpoint': 'jaxpr', 'custom_lin': None,
}


@dataclasses.dataclass
class Value:
  """One array in the flattened program."""
  shape: tuple[int, ...]
  dtype: Any
  dynamic: bool  # depends on the model input

  @property
  def size(self) -> int:
    return int(np.prod(self.shape, dtype=np.int64))


@dataclasses.dataclass
class Eqn:
  """One primitive application; loops carry their flattened `body`."""
  primitive: str
  params: dict[str, Any]
  invars: list[int]
  outvars: list[int]
  name: str  # Flax module path from the name stack, e.g. 'CNN/Conv_0'
  body: 'Graph | None' = None
  trips: int = 1  # how many times `body` runs (scan length)
  prim: Any = None  # the JAX primitive, to evaluate the equation


@dataclasses.dataclass
class Graph:
  """A flat program: values, equations in execution order, inputs, outputs."""
  values: list[Value]
  eqns: list[Eqn]
  inputs: list[int]
  outputs: list[int]
  notes: list[str]
  # value id -> concrete value, for literals and closed-over constants
  consts: dict[int, Any] = dataclasses.field(default_factory=dict)


def _unwrap(j):
  """Returns (jaxpr, consts) for a ClosedJaxpr or a bare Jaxpr."""
  if hasattr(j, 'jaxpr') and hasattr(j, 'consts'):
    return j.jaxpr, list(j.consts)
  return j, []


class _Builder:
  """Inlines nested jaxprs into one `Graph`."""

  def __init__(self):
    self.values: list[Value] = []
    self.eqns: list[Eqn] = []
    self.notes: list[str] = []
    self.consts: dict[int, Any] = {}

  def new(self, aval, dynamic: bool) -> int:
    shape = tuple(int(d) for d in getattr(aval, 'shape', ()))
    dtype = getattr(aval, 'dtype', np.float32)
    self.values.append(Value(shape, dtype, dynamic))
    return len(self.values) - 1

  def const(self, aval, value) -> int:
    """A new value holding a literal or closed-over constant."""
    i = self.new(aval, False)
    self.consts[i] = value
    return i

  def read(self, env, atom) -> int:
    if isinstance(atom, jax.extend.core.Literal):
      return self.const(atom.aval, atom.val)
    return env[atom]

  def run(self, jaxpr, consts, in_ids: list[int]) -> list[int]:
    """Appends `jaxpr`'s equations; returns the ids of its outputs."""
    env = {}
    for v, c in zip(jaxpr.constvars, consts):
      env[v] = self.const(jax.typeof(c), c)
    for v, i in zip(jaxpr.invars, in_ids):
      env[v] = i
    for e in jaxpr.eqns:
      ins = [self.read(env, a) for a in e.invars]
      name = e.primitive.name
      key = _INLINE_KEYS.get(name, 'absent')
      if key != 'absent' and key is not None and key in e.params:
        sub, sub_consts = _unwrap(e.params[key])
        outs = self.run(sub, sub_consts, ins)
      elif name in ('scan', 'while'):
        outs = self._loop(e, ins)
      else:
        dyn = any(self.values[i].dynamic for i in ins)
        outs = [self.new(o.aval, dyn) for o in e.outvars]
        self.eqns.append(Eqn(name, dict(e.params), ins, outs,
                             str(e.source_info.name_stack),
                             prim=e.primitive))
      for v, i in zip(e.outvars, outs):
        env[v] = i
    return [self.read(env, a) for a in jaxpr.outvars]

  def _loop(self, e, ins: list[int]) -> list[int]:
    """A scan/while becomes one equation whose body is a separate Graph."""
    if e.primitive.name == 'scan':
      body_j, trips = e.params['jaxpr'], int(e.params['length'])
      body_ins = list(ins)
    else:
      body_j, trips = e.params['body_jaxpr'], 1
      nc = e.params['cond_nconsts']
      body_ins = list(ins[nc:])
      self.notes.append('while loop: trip count unknown, body counted once')
    # Loop constants (weights) keep their own flag; the carry becomes dynamic
    # as soon as anything entering the loop is.
    n_const = e.params.get('num_consts', e.params.get('body_nconsts', 0))
    dyn_in = any(self.values[i].dynamic for i in ins)
    sub = _Builder()
    jaxpr, consts = _unwrap(body_j)
    sub_in = [sub.new(jax.core.ShapedArray(self.values[i].shape,
                                           self.values[i].dtype),
                      self.values[i].dynamic or (k >= n_const and dyn_in))
              for k, i in enumerate(body_ins)]
    sub_out = sub.run(jaxpr, consts, sub_in)
    body = Graph(sub.values, sub.eqns, sub_in, sub_out, sub.notes,
                 sub.consts)
    self.notes.extend(sub.notes)
    outs = [self.new(o.aval, dyn_in) for o in e.outvars]
    self.eqns.append(Eqn(e.primitive.name, dict(e.params), ins, outs,
                         str(e.source_info.name_stack), body, trips,
                         e.primitive))
    return outs


def _dce(jaxpr):
  """Drops dead code (e.g. a scan's unused stacked outputs), as the TFLite
  converter does, so dead tensors do not inflate the activation estimates."""
  try:
    from jax._src.interpreters import partial_eval as pe  # pylint: disable=g-import-not-at-top
    new, _ = pe.dce_jaxpr(jaxpr, [True] * len(jaxpr.outvars),
                          instantiate=True)
  except (ImportError, AttributeError, TypeError):  # private API moved
    return jaxpr
  if len(new.invars) != len(jaxpr.invars):
    return jaxpr
  return new


def trace_model(model, variables, input_shape) -> Graph:
  """Traces `model.apply(variables, x, train=False)` for one example.

  Args:
    model: a Flax linen module with `__call__(x, train=False)`.
    variables: its variables pytree (`{'params': ..., 'batch_stats': ...}`).
    input_shape: shape of one example without the batch axis, e.g. `(8, 8, 1)`;
      the model is traced at batch size 1 (MCU inference).

  Returns:
    The flattened `Graph`; `inputs[-1]` is `x`, the other inputs are the
    variables' leaves.
  """
  x = jax.ShapeDtypeStruct((1,) + tuple(input_shape), np.float32)
  closed = jax.make_jaxpr(
      lambda v, x: model.apply(v, x, train=False))(variables, x)
  jaxpr = _dce(closed.jaxpr)
  n_var = len(jaxpr.invars) - 1
  return flatten(jaxpr, list(closed.consts),
                 [i == n_var for i in range(len(jaxpr.invars))])


def flatten(jaxpr, consts: Sequence[Any], dynamic: Sequence[bool]) -> Graph:
  """One flat `Graph` of a jaxpr: call-like sub-jaxprs inlined, loops one
  `Eqn` with their flattened `body`.

  Args:
    jaxpr: a `Jaxpr` (or a `ClosedJaxpr`, whose own consts are then used).
    consts: the values of its constvars.
    dynamic: per invar, whether it depends on the model input.

  Returns:
    The `Graph`; `inputs` are the invars' ids, in order.
  """
  if hasattr(jaxpr, 'jaxpr') and hasattr(jaxpr, 'consts'):
    jaxpr, consts = jaxpr.jaxpr, list(jaxpr.consts)
  b = _Builder()
  in_ids = [b.new(v.aval, bool(d)) for v, d in zip(jaxpr.invars, dynamic)]
  outs = b.run(jaxpr, list(consts), in_ids)
  return Graph(b.values, b.eqns, in_ids, outs, b.notes, b.consts)


def has_loops(closed_jaxpr) -> bool:
  """Whether a (closed) jaxpr contains a scan or while loop at any depth."""
  jaxpr, _ = _unwrap(closed_jaxpr)
  for e in jaxpr.eqns:
    if e.primitive.name in ('scan', 'while'):
      return True
    for p in e.params.values():
      if hasattr(p, 'eqns') or (hasattr(p, 'jaxpr') and hasattr(p, 'consts')):
        if has_loops(p):
          return True
  return False


def eval_unrolled(closed_jaxpr, *args):
  """Evaluates a closed jaxpr with every `scan` unrolled into straight code.

  Used for int8 export: TF 2.21's full-integer quantiser crashes on the WHILE
  loop a `scan` becomes, while the unrolled graph quantises fine.

  Args:
    closed_jaxpr: a `ClosedJaxpr` (e.g. from `jax.make_jaxpr`).
    *args: its inputs.

  Returns:
    The list of its outputs.
  """
  jaxpr, consts = _unwrap(closed_jaxpr)
  env = {}

  def read(a):
    return a.val if isinstance(a, jax.extend.core.Literal) else env[a]

  for v, c in zip(jaxpr.constvars, consts):
    env[v] = c
  for v, a in zip(jaxpr.invars, args):
    env[v] = a
  for e in jaxpr.eqns:
    ins = [read(a) for a in e.invars]
    key = _INLINE_KEYS.get(e.primitive.name, 'absent')
    if e.primitive.name == 'scan':
      outs = _unrolled_scan(e.params, ins)
    elif key not in ('absent', None) and key in e.params:
      outs = eval_unrolled(e.params[key], *ins)
    else:
      outs = e.primitive.bind(*ins, **e.params)
      if not e.primitive.multiple_results:
        outs = [outs]
    for v, o in zip(e.outvars, outs):
      env[v] = o
  return [read(a) for a in jaxpr.outvars]


def _unrolled_scan(params, ins):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  nc, ncar, length = params['num_consts'], params['num_carry'], params['length']
  consts, carry, xs = ins[:nc], ins[nc:nc + ncar], ins[nc + ncar:]
  steps = range(length - 1, -1, -1) if params['reverse'] else range(length)
  ys = {}
  for t in steps:
    out = eval_unrolled(params['jaxpr'], *consts, *carry,
                        *[jax.lax.index_in_dim(x, t, keepdims=False)
                          for x in xs])
    carry, ys[t] = out[:ncar], out[ncar:]
  n_ys = len(params['jaxpr'].jaxpr.outvars) - ncar
  stacked = [jnp.stack([ys[t][k] for t in range(length)]) for k in range(n_ys)]
  return list(carry) + stacked
