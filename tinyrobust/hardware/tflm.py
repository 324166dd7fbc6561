"""Measured SRAM: runs a TFLite flatbuffer in the TFLite-Micro interpreter.

`measure_tflm(tflite_bytes)` builds a `tflite_micro` interpreter
(`runtime.Interpreter.from_bytes`), runs one inference on zeros, and parses
the `RecordingMicroAllocator` report that `print_allocations()` writes to the
C-level stderr:

    [RecordingMicroAllocator] Arena allocation total 4832 bytes
    [RecordingMicroAllocator] Arena allocation head 3072 bytes
    [RecordingMicroAllocator] Arena allocation tail 1760 bytes
    [RecordingMicroAllocator] 'TfLiteEvalTensor data' used 264 bytes ...

head = planned (non-persistent) activations and scratch, tail = persistent
data (tensor structs, node structs, kernel op data, quantisation params).

The interpreter runs in a child process: TFLM aborts the whole process
(segfault) when the arena is too small, so each attempt is isolated and the
arena doubles until the model fits or `max_arena` is reached.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from typing import Any

from tinyrobust.hardware import tflite_graph

_WORKER = r'''
import sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime
path, arena, n_inputs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, 'rb') as f:
  data = f.read()
it = runtime.Interpreter.from_bytes(data, arena_size=arena)
for i in range(n_inputs):
  d = it.get_input_details(i)
  it.set_input(np.zeros(d['shape'], d['dtype']), i)
it.invoke()
sys.stderr.flush()
it.print_allocations()
'''

_LINE = re.compile(r'Arena allocation (total|head|tail) (\d+) bytes')
_PART = re.compile(r"'([^']+)' used (\d+) bytes")
_MISSING_OP = re.compile(r"Didn't find op for builtin opcode '([^']+)'")
_PREPARE_FAILED = re.compile(r'Node (\w+) \(number \d+\) failed to prepare')


def parse_allocations(text: str) -> dict[str, Any]:
  """Parses a `print_allocations()` report.

  Returns:
    `{'total', 'head', 'tail'}` in bytes and `breakdown`: a dict from the
    allocator's category name to bytes used.

  Raises:
    ValueError: the text holds no complete report.
  """
  found = {k: int(v) for k, v in _LINE.findall(text)}
  if set(found) != {'total', 'head', 'tail'}:
    raise ValueError('No TFLM allocation report (total/head/tail) in output: '
                     f'{text[-500:]!r}')
  found['breakdown'] = {k: int(v) for k, v in _PART.findall(text)}
  return found


def measure_tflm(tflite_bytes: bytes, *, arena_size: int = 1 << 20,
                 max_arena: int = 1 << 28, timeout: float = 300.0
                 ) -> dict[str, Any]:
  """Arena that TFLite Micro allocates for a model.

  Args:
    tflite_bytes: a TFLite flatbuffer (float32 or int8).
    arena_size: first arena size tried, bytes; doubled on failure.
    max_arena: largest arena tried, bytes.
    timeout: seconds per attempt.

  Returns:
    `{'total', 'head', 'tail', 'breakdown', 'arena_size'}`, bytes
    (`arena_size` is the arena the successful run was given).

  Raises:
    ValueError: not a flatbuffer, an op TFLM lacks or cannot run with these
      tensor types (named), or the model does not fit any arena up to
      `max_arena`.
  """
  if not isinstance(tflite_bytes, (bytes, bytearray)) or len(tflite_bytes) < 8:
    raise ValueError('tflite_bytes must be a TFLite flatbuffer (bytes), got '
                     f'{type(tflite_bytes).__name__}.')
  if bytes(tflite_bytes[4:8]) != b'TFL3':
    raise ValueError('tflite_bytes is not a TFLite flatbuffer (no TFL3 '
                     'identifier).')
  if arena_size <= 0 or max_arena < arena_size:
    raise ValueError(f'Need 0 < arena_size <= max_arena, got {arena_size} and '
                     f'{max_arena}.')
  n_inputs = len(tflite_graph.parse(tflite_bytes).subgraphs[0].inputs)
  with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, 'model.tflite')
    with open(path, 'wb') as f:
      f.write(tflite_bytes)
    arena, last_err = arena_size, ''
    while arena <= max_arena:
      r = subprocess.run(
          [sys.executable, '-c', _WORKER, path, str(arena), str(n_inputs)],
          capture_output=True, text=True, timeout=timeout,
          env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'})
      text = r.stderr + r.stdout
      missing = _MISSING_OP.search(text)
      if missing:
        raise ValueError(f'TFLite Micro has no kernel for op '
                         f'{missing.group(1)!r}; this model cannot run on an '
                         'MCU with the TFLM builtin op resolver.')
      unprepared = _PREPARE_FAILED.search(text)
      if unprepared:
        reason = text[:unprepared.start()].strip().splitlines()[-1:]
        raise ValueError(f'TFLite Micro cannot run op '
                         f'{unprepared.group(1)!r} of this model '
                         f'({" ".join(reason)}).')
      if r.returncode == 0:
        out = parse_allocations(text)
        out['arena_size'] = arena
        return out
      last_err = text[-800:]
      if 'failed to allocate' not in text.lower():
        raise RuntimeError(f'TFLite Micro failed (exit {r.returncode}): '
                           f'{last_err}')
      arena *= 2
  raise ValueError(f'The model does not fit any TFLM arena up to {max_arena} '
                   f'bytes. Last error: {last_err}')
