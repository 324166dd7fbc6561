"""Arena planning shared by the jaxpr-level and TFLite-level SRAM estimates.

`greedy_plan` reproduces TFLite Micro's `GreedyMemoryPlanner`: buffers sorted
by size (largest first) are placed, one by one, at the lowest arena offset
that does not overlap any already-placed buffer whose lifetime intersects.
The arena head is the highest end offset. Sizes are rounded up to TFLM's
16-byte buffer alignment. `peak_live` is the lower bound it approaches: the
largest total size of buffers alive at the same step.
"""

from __future__ import annotations

from typing import Sequence

ALIGN = 16  # MicroArenaBufferAlignment() in TFLM


def align(n: int, a: int = ALIGN) -> int:
  """Rounds `n` bytes up to a multiple of `a`."""
  return -(-int(n) // a) * a


def peak_live(buffers: Sequence[tuple[int, int, int]]) -> int:
  """Largest sum of aligned sizes alive at one step.

  Args:
    buffers: `(size_bytes, first_step, last_step)` per buffer, inclusive.

  Returns:
    Peak bytes.
  """
  if not buffers:
    return 0
  steps = sorted({s for _, s, _ in buffers} | {e for _, _, e in buffers})
  return max(sum(align(n) for n, s, e in buffers if s <= t <= e)
             for t in steps)


def greedy_plan(buffers: Sequence[tuple[int, int, int]]) -> int:
  """Arena bytes TFLM's greedy planner needs for `buffers`.

  Follows `GreedyMemoryPlanner::CalculateOffsetsIfNeeded`: buffers are sorted
  by aligned size, largest first, with ties in *reverse* order of addition
  (TFLM fills its sort array from the tail, then bubble-sorts stably); each is
  put in the first gap, in offset order, between buffers alive at the same
  time that is large enough, else after the last of them.

  Args:
    buffers: `(size_bytes, first_step, last_step)` per buffer, inclusive, in
      the order TFLM adds them (tensor index order, then scratch buffers).

  Returns:
    The planned head size in bytes (highest offset + size).
  """
  sizes = [align(n) for n, _, _ in buffers]
  order = sorted(reversed(range(len(buffers))), key=lambda i: -sizes[i])
  placed: list[tuple[int, int, int, int]] = []  # offset, size, first, last
  top = 0
  for i in order:
    size, first, last = sizes[i], buffers[i][1], buffers[i][2]
    if size == 0:
      continue
    offset = 0
    for o, n, f, l in placed:  # kept sorted by offset
      if l < first or last < f:
        continue
      if o - offset >= size:
        break
      offset = max(offset, o + n)
    k = 0
    while k < len(placed) and placed[k][0] <= offset:
      k += 1
    placed.insert(k, (offset, size, first, last))
    top = max(top, offset + size)
  return top
