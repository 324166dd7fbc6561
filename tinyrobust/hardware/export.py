"""TFLite export (float32 and full-integer int8) and LiteRT agreement checks.

`export_tflite` converts `model.apply(variables, x, train=False)` with
`jax2tf.convert` (default native StableHLO serialisation) and
`tf.lite.TFLiteConverter.from_concrete_functions`, restricted to builtin
TFLite ops (TFLite Micro cannot run TF-Select/flex ops). The flatbuffer's size
is the flash proxy. Int8 is full-integer: weights, activations, input and
output tensors are int8, calibrated on a representative dataset.

`run_litert` runs a flatbuffer in the LiteRT interpreter (`ai-edge-litert`),
quantising inputs and dequantising outputs for int8 models, so the result can
be compared with JAX: `agreement` gives the float max-abs difference and the
top-1 agreement.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import warnings
from typing import Any, Iterator

import jax
import numpy as np

from tinyrobust import tf_setup
from tinyrobust.hardware import graph as graph_lib
from tinyrobust.hardware import shapes

QUANTIZE = (None, 'int8')
MAX_CALIBRATION = 200  # representative examples fed to the converter

# Converter diagnostics that name the offending op.
_OP_PATTERNS = (
    re.compile(r"'(?:vhlo|stablehlo|mhlo|chlo|tf|tfl)\.([A-Za-z0-9_]+)' op "
               r'(?:is not part|is neither|is not supported|failed)'),
    re.compile(r'TF Select ops: ([A-Za-z0-9_, ]+)'),
    re.compile(r'(chlo\.[a-z_]+)\.impl'),
)


# Primitives the TFLite builtin op set cannot express (LAPACK-backed linear
# algebra, host callbacks, FFTs); found in the jaxpr before converting, so the
# error names the JAX op instead of an opaque XlaCallModule failure.
UNSUPPORTED_PRIMITIVES = frozenset({
    'eigh', 'eig', 'svd', 'qr', 'cholesky', 'lu', 'lu_pivots_to_permutation',
    'triangular_solve', 'schur', 'hessenberg', 'tridiagonal',
    'tridiagonal_solve', 'householder_product', 'geqrf', 'geqp3', 'orgqr',
    'custom_linear_solve', 'pure_callback', 'io_callback', 'debug_callback',
    'callback', 'fft'})


def _sub_jaxprs(value) -> Iterator[Any]:
  if isinstance(value, (tuple, list)):
    for v in value:
      yield from _sub_jaxprs(v)
  elif hasattr(value, 'eqns'):
    yield value
  elif hasattr(value, 'jaxpr') and hasattr(value.jaxpr, 'eqns'):
    yield value.jaxpr


def primitive_names(jaxpr) -> set[str]:
  """Names of every primitive in a (closed) jaxpr, at any nesting depth."""
  names: set[str] = set()
  stack = list(_sub_jaxprs(jaxpr))
  while stack:
    j = stack.pop()
    for e in j.eqns:
      names.add(e.primitive.name)
      for v in e.params.values():
        stack.extend(_sub_jaxprs(v))
  return names


def check_representative(rep: np.ndarray) -> None:
  """Rejects non-finite calibration inputs (they poison the int8 ranges)."""
  bad = int(rep.size - np.count_nonzero(np.isfinite(rep)))
  if bad:
    n_nan = int(np.count_nonzero(np.isnan(rep)))
    rows = int(np.count_nonzero(~np.isfinite(rep).reshape(len(rep), -1).all(
        axis=1)))
    raise ValueError(f'representative_data has {bad} non-finite value(s) '
                     f'({n_nan} NaN, {bad - n_nan} inf) in {rows} of '
                     f'{len(rep)} example(s); int8 calibration needs finite '
                     'training inputs.')


@contextlib.contextmanager
def _capture_fd2() -> Iterator[list[str]]:
  """Captures C-level stderr (converter/MLIR diagnostics) into a list."""
  out: list[str] = []
  with tempfile.TemporaryFile(mode='w+b') as tmp:
    saved = os.dup(2)
    os.dup2(tmp.fileno(), 2)
    try:
      yield out
    finally:
      os.dup2(saved, 2)
      os.close(saved)
      tmp.seek(0)
      out.append(tmp.read().decode(errors='replace'))


def unsupported_ops(message: str) -> list[str]:
  """Op names a converter error message complains about."""
  names = []
  for pat in _OP_PATTERNS:
    for m in pat.findall(message):
      for n in m.split(','):
        n = re.sub(r'_v\d+$', '', n.strip())
        if n and n != 'XlaCallModule' and n not in names:
          names.append(n)
  return names


def _check_args(model, input_shape, quantize, representative_data):
  input_shape = shapes.example_shape(input_shape, model)
  if quantize not in QUANTIZE:
    raise ValueError(f'quantize must be one of {QUANTIZE}, got {quantize!r}.')
  if quantize == 'int8':
    if representative_data is None:
      raise ValueError("quantize='int8' needs representative_data: an array "
                       '[N, *input_shape] of training inputs.')
    rep = np.asarray(representative_data, np.float32)
    if rep.ndim != len(input_shape) + 1 or rep.shape[1:] != input_shape or (
        rep.shape[0] < 1):
      raise ValueError(f'representative_data must have shape [N, '
                       f'*{input_shape}] with N >= 1, got {rep.shape}.')
    check_representative(rep)
  return input_shape


def export_tflite(model, variables, input_shape, *, quantize: str | None = None,
                  representative_data=None,
                  unroll_loops: bool | None = None) -> bytes:
  """Converts a Flax model to a TFLite flatbuffer (batch 1).

  Args:
    model: Flax linen module with `__call__(x, train=False)`.
    variables: its variables pytree (baked into the flatbuffer).
    input_shape: one example's shape without batch axis, e.g. `(32, 32, 3)`.
    quantize: None (float32) or 'int8' (full-integer, int8 input/output).
    representative_data: for int8, array `[N, *input_shape]` of finite
      training inputs; the first `MAX_CALIBRATION` examples calibrate the
      ranges.
    unroll_loops: unroll `lax.scan` loops into straight-line ops. None (the
      default) unrolls only for int8, because TF 2.21's full-integer quantiser
      segfaults on the WHILE loop a scan exports to; float32 keeps the WHILE
      loop (TFLite Micro runs it).

  Returns:
    The flatbuffer bytes; `len()` is the flash proxy.

  Raises:
    ValueError: bad arguments (a batch axis in `input_shape`, non-finite
      `representative_data`, named with the count of bad values), or an op
      the TFLite builtin set cannot express (the message names it: JAX
      primitives in `UNSUPPORTED_PRIMITIVES` are found before converting,
      others from the converter's diagnostics).
  """
  input_shape = _check_args(model, input_shape, quantize, representative_data)
  variables = jax.tree_util.tree_map(np.asarray, variables)

  def fn(x):
    return model.apply(variables, x, train=False)

  closed = jax.make_jaxpr(fn)(np.zeros((1,) + input_shape, np.float32))
  bad_ops = sorted(primitive_names(closed) & UNSUPPORTED_PRIMITIVES)
  if bad_ops:
    raise ValueError(f'Cannot export to TFLite builtin ops: unsupported '
                     f'op(s) {bad_ops} (JAX primitives with no TFLite '
                     'builtin equivalent); replace them in the model.')
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  tf = tf_setup.import_tf()
  if unroll_loops is None:
    unroll_loops = quantize == 'int8' and graph_lib.has_loops(closed)
  if unroll_loops:
    def fn(x):  # pylint: disable=function-redefined
      return graph_lib.eval_unrolled(closed, x)[0]

  spec = tf.TensorSpec((1,) + input_shape, tf.float32)
  tf_fn = tf.function(jax2tf.convert(fn, with_gradient=False),
                      autograph=False, input_signature=[spec])
  concrete = tf_fn.get_concrete_function()
  converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete],
                                                              tf_fn)
  if quantize == 'int8':
    rep = np.asarray(representative_data, np.float32)[:MAX_CALIBRATION]

    def gen():
      for row in rep:
        yield [row[None]]

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = gen
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
  else:
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  try:
    with _capture_fd2() as log, warnings.catch_warnings():
      # "Statistics for quantized inputs were expected": int8 input/output
      # tensors get their ranges from the representative data instead.
      warnings.filterwarnings('ignore', message='Statistics for quantized')
      flatbuffer = converter.convert()
  except Exception as err:  # pylint: disable=broad-except
    text = str(err) + '\n' + ''.join(log)
    ops = unsupported_ops(text)
    if ops:
      raise ValueError(f'Cannot export to TFLite builtin ops: unsupported '
                       f'op(s) {ops}.') from err
    raise
  return bytes(flatbuffer)


def run_litert(tflite_bytes: bytes, x) -> np.ndarray:
  """Runs a flatbuffer in LiteRT on a batch, one example at a time.

  Args:
    tflite_bytes: float32 or int8 flatbuffer with one input and one output.
    x: float inputs `[B, *input_shape]`.

  Returns:
    Float outputs `[B, ...]` (int8 outputs dequantised).
  """
  from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
  it = Interpreter(model_content=bytes(tflite_bytes))
  it.allocate_tensors()
  ind, outd = it.get_input_details()[0], it.get_output_details()[0]
  outs = []
  for row in np.asarray(x, np.float32):
    v = row[None]
    if ind['dtype'] != np.float32:
      scale, zero = ind['quantization']
      info = np.iinfo(ind['dtype'])
      v = np.clip(np.round(v / scale + zero), info.min, info.max)
    it.set_tensor(ind['index'], v.astype(ind['dtype']))
    it.invoke()
    y = it.get_tensor(outd['index'])
    if outd['dtype'] != np.float32:
      scale, zero = outd['quantization']
      y = (y.astype(np.float32) - zero) * scale
    outs.append(np.asarray(y, np.float32)[0])
  return np.stack(outs)


def agreement(tflite_bytes: bytes, model, variables, x) -> dict[str, Any]:
  """Compares a flatbuffer's outputs with JAX on inputs `x` `[B, ...]`.

  Returns:
    `{'max_abs_diff': float, 'top1_agreement': float in [0, 1], 'n': B}`;
    when either side's outputs hold NaN/inf both figures are NaN and
    `nonfinite_outputs` counts the bad values.

  Raises:
    ValueError: non-finite inputs `x`.
  """
  x = np.asarray(x, np.float32)
  n_bad = int(x.size - np.count_nonzero(np.isfinite(x)))
  if n_bad:
    raise ValueError(f'agreement inputs x have {n_bad} non-finite value(s); '
                     'compare on finite inputs.')
  ref = np.asarray(model.apply(variables, x, train=False))
  got = run_litert(tflite_bytes, x)
  nonfinite = int(np.count_nonzero(~np.isfinite(ref)) +
                  np.count_nonzero(~np.isfinite(got)))
  if nonfinite:  # argmax(NaN) would make NaN outputs "agree"
    return {'max_abs_diff': float('nan'), 'top1_agreement': float('nan'),
            'n': int(x.shape[0]), 'nonfinite_outputs': nonfinite}
  return {'max_abs_diff': float(np.max(np.abs(got - ref))),
          'top1_agreement': float(np.mean(got.argmax(-1) == ref.argmax(-1))),
          'n': int(x.shape[0])}
