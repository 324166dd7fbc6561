"""A fake-quantised (simulated int8) JAX forward pass of a zoo model.

`calibrate(model, variables, representative_data)` returns a `FakeQuant`
whose `apply(variables, x)` runs the model with the arithmetic of the
full-integer int8 flatbuffer that `tinyrobust.hardware.export_tflite`
produces, simulated in float32, so a white-box attack can take gradients
through it (straight-through estimator: the forward pass rounds, the
backward pass is the identity).

What is simulated (TFLite's int8 scheme, as the converter applies it):

* the input tensor: asymmetric per-tensor int8 from its calibrated range;
* weights (the constant operand of every convolution and matrix product):
  symmetric per-output-channel int8 in [-127, 127], scale max|w| / 127.
  Per-channel rounding is invariant to a per-channel rescaling, so batch
  norm folded into the weights gives the same integers;
* activations: asymmetric per-tensor int8 at every tensor the int8 graph
  materialises, with scale and zero point from the min/max over the
  representative data (range widened to contain 0, zero point nudged as the
  TFLite converter does). Ops the converter fuses are not quantised in
  between: a convolution/matrix product followed by per-channel affine ops
  with constants (bias, batch norm) and a ReLU/ReLU6, or an add/sub/mul of
  two activations followed by a ReLU. Layout ops (reshape, transpose,
  slice, pad, max-pooling) keep their input's quantisation. Sigmoid and
  tanh outputs use TFLite's fixed int8 output ranges (1/256 and 1/128);
  other non-weight constants are per-tensor int8;
* loops (`lax.scan`, e.g. FastGRNN) stay loops, but every body tensor has
  per-step quantisation parameters, as the int8 export unrolls the loop and
  calibrates each step's tensors separately;
* 1-D convolutions: the converter lowers them to RESHAPE, CONV_2D, RESHAPE
  and a separate ADD of an int8 bias (with the fused ReLU), so their output
  is quantised before the bias.

Not simulated: int32 bias rounding and TFLite's fixed-point requantisation
multipliers (both well below one output quantisation step).

The calibration is for the `variables` given to `calibrate`; `apply` must be
called with those variables (they stay an argument, as in every attack
kernel, so the function is pure and jittable).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

QMIN, QMAX = -128, 127
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
# Call-like primitives whose body runs once, inline (key of the body).
_INLINE = {'pjit': 'jaxpr', 'jit': 'jaxpr', 'closed_call': 'call_jaxpr',
           'core_call': 'call_jaxpr', 'custom_jvp_call': 'call_jaxpr',
           'custom_vjp_call': 'call_jaxpr', 'remat': 'jaxpr',
           'checkpoint': 'jaxpr'}


def qparams(lo: float, hi: float) -> tuple[float, int]:
  """TFLite's asymmetric int8 `(scale, zero_point)` for a range [lo, hi].

  The range is widened to contain 0; the zero point is taken from the end
  with the smaller error and nudged to an integer in [-128, 127].
  """
  lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
  if hi - lo < np.finfo(np.float64).eps:
    return 1.0, QMIN
  scale = (hi - lo) / (QMAX - QMIN)
  from_min, from_max = QMIN - lo / scale, QMAX - hi / scale
  err_min = abs(QMIN) + abs(lo / scale)
  err_max = abs(QMAX) + abs(hi / scale)
  zp = from_min if err_min < err_max else from_max
  return float(scale), int(np.clip(np.round(zp), QMIN, QMAX))


def fake_quant(x: jax.Array, scale, zero_point) -> jax.Array:
  """Rounds `x` to the int8 grid `(q - zero_point) * scale`, q in [-128,
  127]; the gradient is the identity (straight-through estimator)."""
  q = jnp.clip(jnp.round(x / scale) + zero_point, QMIN, QMAX)
  return x + jax.lax.stop_gradient((q - zero_point) * scale - x)


def quantize_weights(w: jax.Array, axis: int | None) -> jax.Array:
  """Symmetric int8 in [-127, 127] per channel along `axis` (None: per
  tensor), dequantised; all-zero channels stay zero."""
  if axis is None:
    m = jnp.max(jnp.abs(w))
  else:
    red = tuple(a for a in range(w.ndim) if a != axis % w.ndim)
    m = jnp.max(jnp.abs(w), axis=red, keepdims=True)
  scale = jnp.where(m > 0, m / 127.0, 1.0)
  return jnp.clip(jnp.round(w / scale), -127, 127) * scale


# --------------------------------------------------------------------------
# A flat program: call-like sub-jaxprs inlined, scans kept with a flat body.


@dataclasses.dataclass(frozen=True)
class _Lit:
  value: Any


@dataclasses.dataclass
class _Eqn:
  prim: Any
  params: dict[str, Any]
  ins: list[Any]            # value ids (int) or _Lit
  outs: list[int]
  shapes: list[tuple[int, ...]]
  dtypes: list[Any]
  body: '_Program | None' = None


@dataclasses.dataclass
class _Program:
  eqns: list[_Eqn]
  consts: dict[int, Any]
  inputs: list[int]
  outputs: list[Any]


class _Flattener:
  """Builds `_Program`s from jaxprs; ids are unique across nesting."""

  def __init__(self):
    self.count = 0

  def new(self) -> int:
    self.count += 1
    return self.count

  def program(self, closed) -> _Program:
    jaxpr, consts = closed.jaxpr, list(closed.consts)
    eqns, const_ids = [], {}
    cids = [self.new() for _ in jaxpr.constvars]
    const_ids.update(zip(cids, consts))
    ins = [self.new() for _ in jaxpr.invars]
    outs = self._inline(jaxpr, cids + ins, jaxpr.constvars + jaxpr.invars,
                        eqns, const_ids)
    return _Program(eqns, const_ids, ins, outs)

  def _inline(self, jaxpr, refs, variables, eqns, const_ids):
    env = dict(zip(variables, refs))

    def ref(a):
      return _Lit(a.val) if isinstance(a, jax.extend.core.Literal) else env[a]

    for e in jaxpr.eqns:
      ins = [ref(a) for a in e.invars]
      name = e.primitive.name
      key = _INLINE.get(name)
      if key is not None and key in e.params:
        sub = e.params[key]
        sj = sub.jaxpr if hasattr(sub, 'jaxpr') else sub
        sc = list(sub.consts) if hasattr(sub, 'consts') else []
        cids = [self.new() for _ in sc]
        const_ids.update(zip(cids, sc))
        outs = self._inline(sj, cids + ins, sj.constvars + sj.invars, eqns,
                            const_ids)
      else:
        outs = [self.new() for _ in e.outvars]
        body = self.program(e.params['jaxpr']) if name == 'scan' else None
        eqns.append(_Eqn(e.primitive, dict(e.params), ins, outs,
                         [tuple(v.aval.shape) for v in e.outvars],
                         [v.aval.dtype for v in e.outvars], body))
      env.update(zip(e.outvars, outs))
    return [ref(a) for a in jaxpr.outvars]


def _trace(model, variables, x_shape, dtype=jnp.float32) -> _Program:
  spec = lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a))
  closed = jax.make_jaxpr(
      lambda v, x: model.apply(v, x, train=False))(
          jax.tree.map(spec, variables), jax.ShapeDtypeStruct(x_shape, dtype))
  return _Flattener().program(closed)


# --------------------------------------------------------------------------
# The plan: where weights and activations are quantised (static analysis).


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


def _conv1d(e: _Eqn) -> bool:
  return (e.prim.name == 'conv_general_dilated'
          and len(e.params['dimension_numbers'].lhs_spec) == 3)


def _dot_axis(e: _Eqn, k: int, rank: int) -> int | None:
  (lc, rc), (lb, rb) = e.params['dimension_numbers']
  used = set(lc if k == 0 else rc) | set(lb if k == 0 else rb)
  free = [a for a in range(rank) if a not in used]
  return free[0] if len(free) == 1 else None


class _Planner:
  """Walks a program with concrete constants; records quantisation points.

  A dynamic value's `state` says which fused TFLite op it ends: 'acc' (a
  conv/matmul, possibly with folded per-channel affine ops), 'binary' (an
  add/sub/mul of two activations), 'relu' / 'relu6' (a fused activation).
  """

  def __init__(self):
    self.plan = Plan({}, {}, {}, {})

  def run(self, prog: _Program, static: dict[int, Any], path=()) -> None:
    """`static`: value id -> concrete value for x-independent values."""
    self.val = dict(static)
    self.val.update(prog.consts)
    self.prog, self.state, self.consumers, self.shape = prog, {}, {}, {}
    for i, e in enumerate(prog.eqns):
      self.shape.update(zip(e.outs, e.shapes))
      for r in e.ins:
        if not isinstance(r, _Lit):
          self.consumers.setdefault(r, []).append(i)
    for r in prog.outputs:
      if not isinstance(r, _Lit):
        self.consumers.setdefault(r, []).append(-1)
    dynamic = []
    for i, e in enumerate(prog.eqns):  # constants first: consumers look ahead
      if all(self.static(r) for r in e.ins) and e.body is None:
        outs = e.prim.bind(*[self.get(r) for r in e.ins], **e.params)
        self.val.update(zip(e.outs, outs if e.prim.multiple_results
                            else [outs]))
      else:
        dynamic.append(i)
    for i in dynamic:
      e, p = prog.eqns[i], path + (i,)
      self.plan.prims[p] = e.prim.name
      if e.body is not None:
        nc = e.params['num_consts']
        inner = {b: self.get(r) for b, r in zip(e.body.inputs[:nc],
                                                e.ins[:nc]) if self.static(r)}
        saved = (self.val, self.prog, self.state, self.consumers, self.shape)
        self.run(e.body, inner, p)
        self.val, self.prog, self.state, self.consumers, self.shape = saved
        continue
      self._operands(p, e)
      if len(e.outs) == 1 and _is_float(e.dtypes[0]):
        self._activation(p, e)

  def static(self, r) -> bool:
    return isinstance(r, _Lit) or r in self.val

  def get(self, r):
    return r.value if isinstance(r, _Lit) else self.val.get(r)

  def _operands(self, p, e: _Eqn) -> None:
    """Weights of conv/matmul per channel; other array constants per
    tensor (affine constants fold into the preceding op or stay float)."""
    name = e.prim.name
    const = [k for k, r in enumerate(e.ins) if self.static(r)
             and not isinstance(r, _Lit) and np.size(self.get(r)) > 1
             and _is_float(jnp.result_type(self.get(r)))]
    if not const:
      return
    if name == 'conv_general_dilated':
      self.plan.weights[p] = {
          k: e.params['dimension_numbers'].rhs_spec[0] if k == 1 else None
          for k in const}
    elif name == 'dot_general':
      self.plan.weights[p] = {k: _dot_axis(e, k, np.ndim(self.get(e.ins[k])))
                              for k in const}
    elif name not in PASS_THROUGH and name not in AFFINE:
      self.plan.consts[p] = const

  def _activation(self, p, e: _Eqn) -> None:
    name, out = e.prim.name, e.outs[0]
    dyn = [r for r in e.ins if not self.static(r)]
    src = self.state.get(dyn[0]) if len(dyn) == 1 else None
    if name in ACCUMULATORS:
      self.state[out] = 'conv1d' if _conv1d(e) else 'acc'
    elif self._fuses(e, dyn[0] if len(dyn) == 1 else None, src):
      self.state[out] = {'max': 'relu', 'min': 'relu6'}.get(name, 'acc')
    elif name in BINARY:  # its own ADD/SUB/MUL op (fuses a ReLU)
      self.state[out] = 'binary'
      const = [k for k, r in enumerate(e.ins) if self.static(r)
               and not isinstance(r, _Lit) and np.size(self.get(r)) > 1]
      if const:  # an int8 constant operand (e.g. a 1-D conv's bias)
        self.plan.consts[p] = const
    if name in PASS_THROUGH:
      return
    users = self.consumers.get(out, [])
    if len(users) == 1 and users[0] >= 0 and self._fuses(
        self.prog.eqns[users[0]], out, self.state.get(out)):
      return  # folded into its single consumer: no int8 tensor here
    self.plan.acts[p] = name if name in FIXED_OUTPUT else 'calibrated'

  def _fuses(self, c: _Eqn, dyn, src) -> bool:
    """Whether op `c`, reading the activation `dyn` that ends a fused op of
    state `src`, folds into that op (no int8 tensor between them)."""
    if dyn is None or src is None:
      return False
    if c.prim.name in AFFINE and src == 'acc':
      other = [r for r in c.ins if not (isinstance(r, int) and r == dyn)]
      return (len(other) == 1 and self.static(other[0])
              and not (c.prim.name == 'div' and c.ins[0] != dyn)
              and _per_channel_const(self.get(other[0]))
              and tuple(c.shapes[0]) == tuple(self.shape.get(dyn, ())))
    if c.prim.name == 'max' and src in ('acc', 'binary'):
      return self._bound(c, 0.0)
    if c.prim.name == 'min' and src == 'relu':
      return self._bound(c, 6.0)
    return False

  def _bound(self, e: _Eqn, bound: float) -> bool:
    """`max(x, 0)` / `min(x, 6)` with a scalar constant bound."""
    consts = [self.get(r) for r in e.ins if self.static(r)]
    return (len(e.ins) == 2 and len(consts) == 1 and np.size(consts[0]) == 1
            and float(np.asarray(consts[0]).reshape(())) == bound)


# --------------------------------------------------------------------------
# Evaluation: float (calibration statistics) or fake-quantised.


def _qparams_jnp(lo, hi):
  """`qparams` for traced constants (per-tensor int8 of a constant)."""
  lo, hi = jnp.minimum(lo, 0.0), jnp.maximum(hi, 0.0)
  scale = jnp.where(hi > lo, (hi - lo) / (QMAX - QMIN), 1.0)
  from_min = abs(QMIN) + jnp.abs(lo / scale) < QMAX + jnp.abs(hi / scale)
  zp = jnp.where(from_min, QMIN - lo / scale, QMAX - hi / scale)
  return scale, jnp.clip(jnp.round(zp), QMIN, QMAX)


def _quant_const(c):
  s, z = _qparams_jnp(jnp.min(c), jnp.max(c))
  return fake_quant(c, s, z)


def _run(prog: _Program, args, plan: Plan, params, calibrate: bool,
         path=()):
  """Evaluates `prog`; returns `(outputs, stats)` where stats maps each
  activation path to its `(min, max)` when `calibrate`."""
  env = dict(prog.consts)
  env.update(zip(prog.inputs, args))
  read = lambda r: r.value if isinstance(r, _Lit) else env[r]
  stats = {}
  for i, e in enumerate(prog.eqns):
    p = path + (i,)
    ins = [read(r) for r in e.ins]
    if e.body is not None:
      outs, st = _run_scan(e, ins, plan, params, calibrate, p)
      stats.update(st)
    else:
      if not calibrate:
        for k, axis in plan.weights.get(p, {}).items():
          ins[k] = quantize_weights(ins[k], axis)
        for k in plan.consts.get(p, ()):
          ins[k] = _quant_const(ins[k])
      outs = e.prim.bind(*ins, **e.params)
      outs = list(outs) if e.prim.multiple_results else [outs]
      if p in plan.acts:
        if calibrate:
          stats[p] = (jnp.min(outs[0]), jnp.max(outs[0]))
        else:
          outs[0] = fake_quant(outs[0], *params[p])
    env.update(zip(e.outs, outs))
  return [read(r) for r in prog.outputs], stats


def _run_scan(e: _Eqn, ins, plan, params, calibrate, path):
  """A scan whose body quantises with per-step parameters (the int8 export
  unrolls the loop and calibrates every step's tensors separately);
  calibration returns per-step `(min, max)` arrays."""
  nc, ncar = e.params['num_consts'], e.params['num_carry']
  consts, carry, xs = ins[:nc], ins[nc:nc + ncar], ins[nc + ncar:]
  steps = {k: tuple(jnp.asarray(a) for a in v) for k, v in params.items()
           if k[:len(path)] == path and len(k) > len(path)
           and np.ndim(v[0]) > 0}

  def body(c, xq):
    x_t, q_t = xq
    outs, st = _run(e.body, consts + list(c) + list(x_t), plan,
                    {**params, **q_t}, calibrate, path)
    return tuple(outs[:ncar]), (tuple(outs[ncar:]), st)

  carry, (ys, st) = jax.lax.scan(body, tuple(carry), (tuple(xs), steps),
                                 length=e.params['length'],
                                 reverse=e.params['reverse'])
  return list(carry) + list(ys), st


INPUT = ('input',)


@dataclasses.dataclass(frozen=True, eq=False)
class FakeQuant:
  """A calibrated fake-quantised model; `apply(variables, x) -> logits`.

  Attributes:
    model: the Flax module.
    plan: where weights and activations are quantised.
    params: path -> `(scale, zero_point)` of each activation, and `INPUT`
      for the input tensor.
    num_calibration: representative examples used.
  """
  model: Any
  plan: Plan
  params: dict[tuple[Any, ...], tuple[float, int]]
  num_calibration: int
  _programs: dict[Any, _Program] = dataclasses.field(default_factory=dict)

  def program(self, variables, x_shape, dtype=jnp.float32) -> _Program:
    key = (tuple(x_shape), jnp.dtype(dtype).name)
    if key not in self._programs:
      prog = _trace(self.model, variables, tuple(x_shape), dtype)
      _check_structure(prog, self.plan)
      self._programs[key] = prog
    return self._programs[key]

  def apply(self, variables, x: jax.Array) -> jax.Array:
    """Fake-quantised logits `[B, K]` of `x` `[B, ...]` (pure; jittable)."""
    prog = self.program(variables, x.shape, x.dtype)
    x = fake_quant(x, *self.params[INPUT])
    outs, _ = _run(prog, jax.tree.leaves(variables) + [x], self.plan,
                   self.params, False)
    return outs[0]

  @property
  def apply_fn(self) -> Callable[[Any, jax.Array], jax.Array]:
    return self.apply

  @property
  def input_quantization(self) -> tuple[float, int]:
    return self.params[INPUT]


def _check_structure(prog: _Program, plan: Plan, path=()) -> None:
  for i, e in enumerate(prog.eqns):
    p = path + (i,)
    want = plan.prims.get(p)
    if want is not None and want != e.prim.name:
      raise RuntimeError(f'Traced program differs from the calibrated one at '
                         f'{p}: {e.prim.name} vs {want}.')
    if e.body is not None:
      _check_structure(e.body, plan, p)


def calibrate(model, variables, representative_data, *,
              batch_size: int = 50) -> FakeQuant:
  """Plans and calibrates the fake-quantised `model` (module doc).

  Args:
    model: Flax module with `__call__(x, train=False)`.
    variables: its trained variables (the calibration is for these).
    representative_data: `[N, *input_shape]` finite training inputs; pass
      `hardware.representative(x_train)`, the calibration set of the int8
      export, so that both see the same ranges.
    batch_size: examples per calibration step.

  Returns:
    A `FakeQuant`.

  Raises:
    ValueError: empty or non-finite representative data.
  """
  rep = np.asarray(representative_data, np.float32)
  if rep.ndim < 2 or len(rep) == 0 or not np.all(np.isfinite(rep)):
    raise ValueError(f'representative_data must be a non-empty finite array '
                     f'[N, *input_shape], got shape {rep.shape}'
                     + ('' if rep.size == 0 or np.all(np.isfinite(rep)) else
                        ' with non-finite values') + '.')
  variables = jax.tree.map(np.asarray, variables)
  leaves = jax.tree.leaves(variables)
  prog = _trace(model, variables, (1,) + rep.shape[1:])
  planner = _Planner()
  planner.run(prog, dict(zip(prog.inputs[:len(leaves)], leaves)))
  plan = planner.plan
  lo, hi = {}, {}

  @functools.partial(jax.jit, static_argnums=2)
  def stats(v, x, shape):
    del shape
    p = _trace(model, v, x.shape)
    return _run(p, jax.tree.leaves(v) + [x], plan, {}, True)[1]

  for i in range(0, len(rep), batch_size):
    xb = rep[i:i + batch_size]
    for k, (a, b) in stats(variables, xb, xb.shape).items():
      lo[k] = np.minimum(lo.get(k, np.inf), np.asarray(a, np.float64))
      hi[k] = np.maximum(hi.get(k, -np.inf), np.asarray(b, np.float64))
  params = {INPUT: qparams(rep.min(), rep.max())}
  for k in plan.acts:
    kind = plan.acts[k]
    params[k] = FIXED_OUTPUT[kind] if kind in FIXED_OUTPUT else (
        qparams_array(lo[k], hi[k]))
  return FakeQuant(model, plan, params, len(rep))


def qparams_array(lo, hi):
  """`qparams` elementwise: per loop step inside scans, else scalars."""
  lo, hi = np.asarray(lo), np.asarray(hi)
  if lo.ndim == 0:
    return qparams(lo, hi)
  pairs = [qparams(a, b) for a, b in zip(lo.ravel(), hi.ravel())]
  return (np.asarray([s for s, _ in pairs], np.float32).reshape(lo.shape),
          np.asarray([z for _, z in pairs], np.float32).reshape(lo.shape))
