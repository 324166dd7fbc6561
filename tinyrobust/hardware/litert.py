"""Running an int8 flatbuffer on the host: LiteRT and TFLite Micro.

`LiteRT(flatbuffer)` runs a TFLite model in the LiteRT interpreter on
batches (with the model's input quantisation and output dequantisation);
`tflm_outputs` runs it in TFLite Micro (the MCU runtime) in a child process,
and `tflm_check` compares the two on the same int8 inputs, so numbers
measured with LiteRT hold for the MCU runtime.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from typing import Any

import numpy as np

from tinyrobust.hardware import tflm


class LiteRT:
  """A flatbuffer in the LiteRT interpreter, run on batches.

  The interpreter is resized to the batch when the graph allows it (checked
  once against single-example runs), else examples run one at a time.
  """

  def __init__(self, flatbuffer: bytes, batch_size: int = 64):
    # LiteRT is an optional dependency, imported only when a runner is built.
    from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
    self.flatbuffer = bytes(flatbuffer)
    self._make = lambda: Interpreter(model_content=self.flatbuffer)
    self.single = self._make()
    self.single.allocate_tensors()
    self.inp = self.single.get_input_details()[0]
    self.out = self.single.get_output_details()[0]
    self.batch_size = int(batch_size)
    self._batched = None  # unknown until the first call

  def quantize_input(self, x) -> np.ndarray:
    """Float inputs -> the input tensor's dtype (int8: round, clip)."""
    x = np.asarray(x, np.float32)
    if self.inp['dtype'] == np.float32:
      return x
    scale, zero = self.inp['quantization']
    info = np.iinfo(self.inp['dtype'])
    return np.clip(np.round(x / scale + zero), info.min,
                   info.max).astype(self.inp['dtype'])

  def dequantize_output(self, q) -> np.ndarray:
    if self.out['dtype'] == np.float32:
      return np.asarray(q, np.float32)
    scale, zero = self.out['quantization']
    return (np.asarray(q, np.float32) - zero) * scale

  def _one(self, xq: np.ndarray) -> np.ndarray:
    outs = []
    for row in xq:
      self.single.set_tensor(self.inp['index'], row[None])
      self.single.invoke()
      outs.append(self.single.get_tensor(self.out['index'])[0].copy())
    return np.stack(outs)

  def _many(self, xq: np.ndarray) -> np.ndarray:
    it = self._make()
    it.resize_tensor_input(self.inp['index'], list(xq.shape))
    it.allocate_tensors()
    it.set_tensor(self.inp['index'], xq)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]['index']).copy()

  def run_quantized(self, xq: np.ndarray) -> np.ndarray:
    """Raw output tensors `[B, K]` for input tensors `xq` `[B, ...]`."""
    if self._batched is None and len(xq) > 1:
      try:
        probe = xq[:4]
        self._batched = bool(np.array_equal(self._many(probe),
                                            self._one(probe)))
      except (RuntimeError, ValueError):
        self._batched = False
    if not self._batched:
      return self._one(xq)
    return np.concatenate([self._many(xq[i:i + self.batch_size])
                           for i in range(0, len(xq), self.batch_size)])

  def __call__(self, x) -> np.ndarray:
    """Float (dequantised) outputs `[B, K]` of float inputs `[B, ...]`."""
    return self.dequantize_output(self.run_quantized(self.quantize_input(x)))


_TFLM_WORKER = r'''
import sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime
path, arena, xs_path, out_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
with open(path, 'rb') as f:
  it = runtime.Interpreter.from_bytes(f.read(), arena_size=arena)
outs = []
for row in np.load(xs_path):
  it.set_input(row[None], 0)
  it.invoke()
  outs.append(np.array(it.get_output(0))[0])
np.save(out_path, np.stack(outs))
'''


def tflm_outputs(flatbuffer: bytes, xq: np.ndarray) -> np.ndarray:
  """Raw int8 outputs of TFLite Micro for int8 inputs `xq` `[B, ...]`.

  Runs in a child process (TFLM aborts the process on failure) with the
  arena `hardware.measure_tflm` finds.

  Raises:
    ValueError: TFLite Micro cannot run the model (named op or arena).
  """
  arena = tflm.measure_tflm(flatbuffer)['arena_size']
  with tempfile.TemporaryDirectory() as d:
    paths = [os.path.join(d, n) for n in ('m.tflite', 'x.npy', 'y.npy')]
    with open(paths[0], 'wb') as f:
      f.write(flatbuffer)
    np.save(paths[1], xq)
    r = subprocess.run([sys.executable, '-c', _TFLM_WORKER, paths[0],
                        str(arena), paths[1], paths[2]],
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'})
    if r.returncode != 0 or not os.path.exists(paths[2]):
      raise ValueError(f'TFLite Micro failed on the sample (exit '
                       f'{r.returncode}): {(r.stderr + r.stdout)[-400:]}')
    return np.load(paths[2])


def tflm_check(runner: LiteRT, x_model: np.ndarray) -> dict[str, Any]:
  """LiteRT vs TFLite Micro int8 outputs on model inputs `x_model`."""
  xq = runner.quantize_input(x_model)
  try:
    micro = tflm_outputs(runner.flatbuffer, xq)
  except (ValueError, RuntimeError, OSError,
          subprocess.TimeoutExpired) as err:
    return {'ran': False, 'error': str(err)[:400], 'samples': len(xq)}
  lite = runner.run_quantized(xq)
  diff = np.abs(micro.astype(np.int64) - lite.astype(np.int64))
  return {'ran': True, 'samples': len(xq), 'equal': bool(diff.max() == 0),
          'max_abs_diff_int8_steps': int(diff.max()),
          'top1_agreement': float(np.mean(micro.argmax(-1) ==
                                          lite.argmax(-1)))}
