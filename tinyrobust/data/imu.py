"""Time-base repair and windowing for jittery IMU recordings (NumPy).

Earable IMU data arrive in BLE bursts: several samples share one timestamp,
then nothing for ~90 ms, and packets are sometimes lost (gaps of seconds).
`resample_uniform` turns one such recording into segments on a uniform grid;
`sliding_windows` cuts segments into fixed-length windows.
"""

from __future__ import annotations

import numpy as np


def resample_uniform(signals: np.ndarray, t_ms: np.ndarray, *, rate_hz: float,
                     max_gap_s: float | None = None) -> list[np.ndarray]:
  """Linear interpolation of one recording onto a uniform time grid.

  Samples that share a timestamp are averaged first (they are one BLE burst
  stamped on arrival, so their order inside the burst is all that is known).
  The grid starts at each segment's first timestamp and steps by
  `1000 / rate_hz` ms up to its last timestamp. A gap between consecutive
  (distinct) timestamps longer than `max_gap_s` ends a segment, so no value is
  invented across a long dropout.

  Args:
    signals: `[L, C]` samples.
    t_ms: `[L]` non-decreasing timestamps in ms.
    rate_hz: output sampling rate.
    max_gap_s: longest gap bridged by interpolation; None bridges every gap.

  Returns:
    A list of `[L_k, C]` float32 segments at `rate_hz` (segments of a single
    sample are dropped).

  Raises:
    ValueError: bad rate, mismatched lengths or decreasing timestamps.
  """
  if rate_hz <= 0:
    raise ValueError(f'rate_hz must be > 0, got {rate_hz!r}.')
  if max_gap_s is not None and max_gap_s <= 0:
    raise ValueError(f'max_gap_s must be > 0 or None, got {max_gap_s!r}.')
  signals = np.asarray(signals, np.float64)
  t = np.asarray(t_ms, np.float64)
  if signals.shape[0] != t.shape[0]:
    raise ValueError(f'{signals.shape[0]} samples but {t.shape[0]} timestamps.')
  if np.any(np.diff(t) < 0):
    raise ValueError('Timestamps must be non-decreasing.')
  tu, inv, counts = np.unique(t, return_inverse=True, return_counts=True)
  mean = np.zeros((len(tu), signals.shape[1]))
  np.add.at(mean, inv, signals)
  mean /= counts[:, None]
  if max_gap_s is None:
    cuts = np.array([], int)
  else:
    cuts = np.flatnonzero(np.diff(tu) > 1000.0 * max_gap_s) + 1
  step = 1000.0 / rate_hz
  out = []
  for ts, xs in zip(np.split(tu, cuts), np.split(mean, cuts)):
    if len(ts) < 2:
      continue
    grid = ts[0] + step * np.arange(int(np.floor((ts[-1] - ts[0]) / step)) + 1)
    out.append(np.stack([np.interp(grid, ts, xs[:, c])
                         for c in range(xs.shape[1])], axis=1).astype(
                             np.float32))
  return out


def sliding_windows(x: np.ndarray, window: int, stride: int) -> np.ndarray:
  """`[L, C]` -> `[n, window, C]` with `n = 1 + (L - window) // stride` (0 if short)."""
  if x.shape[0] < window:
    return np.zeros((0, window, x.shape[1]), x.dtype)
  v = np.lib.stride_tricks.sliding_window_view(x, window, axis=0)
  return np.ascontiguousarray(v[::stride].transpose(0, 2, 1))
