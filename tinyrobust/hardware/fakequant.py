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

The model is flattened by `hardware.graph.flatten` (the counters' flattener)
and planned by `hardware.quant_plan.Planner`; this module calibrates and
evaluates the plan.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from tinyrobust.hardware import graph as graph_lib
from tinyrobust.hardware import quant_plan
from tinyrobust.hardware.quant_plan import FIXED_OUTPUT
from tinyrobust.hardware.quant_plan import Plan

QMIN, QMAX = -128, 127


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


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def quantize_weights(w: jax.Array, axis: int | None) -> jax.Array:
  """Symmetric int8 in [-127, 127] per channel along `axis` (None: per
  tensor), dequantised; all-zero channels stay zero. The gradient is the
  identity (straight-through estimator, for quantisation-aware training:
  `tinyrobust.qat`); the forward value is the rounded one, unchanged."""
  if axis is None:
    m = jnp.max(jnp.abs(w))
  else:
    red = tuple(a for a in range(w.ndim) if a != axis % w.ndim)
    m = jnp.max(jnp.abs(w), axis=red, keepdims=True)
  scale = jnp.where(m > 0, m / 127.0, 1.0)
  return jnp.clip(jnp.round(w / scale), -127, 127) * scale


@quantize_weights.defjvp
def _quantize_weights_jvp(axis, primals, tangents):
  return quantize_weights(primals[0], axis), tangents[0]


def _trace(model, variables, x_shape, dtype=jnp.float32) -> graph_lib.Graph:
  """The flat `Graph` of `model.apply(variables, x, train=False)`; its
  inputs are the variables' leaves, then x."""
  spec = lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a))
  closed = jax.make_jaxpr(
      lambda v, x: model.apply(v, x, train=False))(
          jax.tree.map(spec, variables), jax.ShapeDtypeStruct(x_shape, dtype))
  n = len(closed.jaxpr.invars)
  return graph_lib.flatten(closed, (), [i == n - 1 for i in range(n)])


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


def _run(prog: graph_lib.Graph, args, plan: Plan, params, calibrate: bool,
         path=()):
  """Evaluates `prog`; returns `(outputs, stats)` where stats maps each
  activation path to its `(min, max)` when `calibrate`."""
  env = dict(prog.consts)
  env.update(zip(prog.inputs, args))
  stats = {}
  for i, e in enumerate(prog.eqns):
    p = path + (i,)
    ins = [env[r] for r in e.invars]
    if e.primitive == 'scan':
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
    env.update(zip(e.outvars, outs))
  return [env[r] for r in prog.outputs], stats


def _run_scan(e: graph_lib.Eqn, ins, plan, params, calibrate, path):
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
  _programs: dict[Any, graph_lib.Graph] = dataclasses.field(
      default_factory=dict)

  def program(self, variables, x_shape, dtype=jnp.float32) -> graph_lib.Graph:
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


def _check_structure(prog: graph_lib.Graph, plan: Plan, path=()) -> None:
  for i, e in enumerate(prog.eqns):
    p = path + (i,)
    want = plan.prims.get(p)
    if want is not None and want != e.primitive:
      raise RuntimeError(f'Traced program differs from the calibrated one at '
                         f'{p}: {e.primitive} vs {want}.')
    if e.primitive == 'scan':
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
  planner = quant_plan.Planner()
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
