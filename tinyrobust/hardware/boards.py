"""MCU targets of the study and the budget check `fits(profile, board)`.

The study's boards: STM32F746ZG, STM32F446RE and STM32L476RG.

Budgets are the whole on-chip SRAM and flash; the tensor arena must fit in
SRAM and the flatbuffer in flash. Latency is an *estimate* only:
`macs / (macs_per_cycle * clock_hz)`, with a per-board, per-precision
MACs-per-cycle constant. The defaults are rough assumptions for Cortex-M
kernels (int8 CMSIS-NN: ~0.5 MAC/cycle on an M7 with its dual-issue SIMD,
~0.3 on an M4; float32 reference kernels several times slower), not
measurements; pass a custom board dict with your own `macs_per_cycle` after
timing a model on the device.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Mapping

KB = 1024
PRECISIONS = ('float32', 'int8')


def check_number(name: str, value: Any, *, positive: bool = True) -> float:
  """A finite real number (not a bool), > 0 or (`positive=False`) >= 0.

  Raises:
    ValueError: naming `name` and the value.
  """
  bound = '> 0' if positive else '>= 0'
  if (isinstance(value, bool) or type(value).__name__ == 'bool_' or
      not isinstance(value, numbers.Real)):
    raise ValueError(f'{name} must be a finite number {bound}, got '
                     f'{value!r} ({type(value).__name__}).')
  v = float(value)
  if not math.isfinite(v) or v < 0 or (positive and v == 0):
    raise ValueError(f'{name} must be a finite number {bound}, got '
                     f'{value!r}.')
  return v


@dataclasses.dataclass(frozen=True)
class Board:
  """A microcontroller target.

  Attributes:
    name: identifier, e.g. 'stm32f746zg'.
    sram: on-chip SRAM budget, bytes.
    flash: flash budget, bytes.
    clock_hz: core clock, Hz.
    core: CPU core name (informational).
    macs_per_cycle: assumed throughput per precision, {'float32': x,
      'int8': y}, used only for the latency estimate.
    note: provenance of the figures.
  """
  name: str
  sram: int
  flash: int
  clock_hz: float
  core: str = ''
  macs_per_cycle: Mapping[str, float] = dataclasses.field(
      default_factory=lambda: {'float32': 0.1, 'int8': 0.3})
  note: str = ''

  def __post_init__(self):
    if not isinstance(self.name, str) or not self.name:
      raise ValueError(f'Board name must be a non-empty string, got '
                       f'{self.name!r}.')
    for k in ('sram', 'flash', 'clock_hz'):
      check_number(f'Board {self.name!r} {k}', getattr(self, k))
    mpc = self.macs_per_cycle
    if not isinstance(mpc, Mapping):
      raise ValueError(f'Board {self.name!r} macs_per_cycle must be a dict '
                       f'{{precision: MACs per cycle}}, got {mpc!r}.')
    bad = sorted(set(mpc) - set(PRECISIONS))
    if bad:
      raise ValueError(f'Board {self.name!r} macs_per_cycle has unknown '
                       f'precision(s) {bad}; valid: {PRECISIONS}.')
    for p, v in mpc.items():
      check_number(f'Board {self.name!r} macs_per_cycle[{p!r}]', v)


_M7 = {'float32': 0.15, 'int8': 0.5}
_M4 = {'float32': 0.1, 'int8': 0.3}

BOARDS: dict[str, Board] = {
    'stm32f746zg': Board('stm32f746zg', 320 * KB, 1024 * KB, 216e6,
                         'Cortex-M7', _M7, 'Nucleo-F746ZG, datasheet.'),
    'stm32f446re': Board('stm32f446re', 128 * KB, 512 * KB, 180e6,
                         'Cortex-M4', _M4,
                         'Nucleo-F446RE, datasheet 128 kB SRAM; the study '
                         'text says 192 kB.'),
    'stm32l476rg': Board('stm32l476rg', 128 * KB, 1024 * KB, 80e6,
                         'Cortex-M4', _M4, 'Nucleo-L476RG, datasheet.'),
}

_FIELDS = {f.name for f in dataclasses.fields(Board)}


def list_boards() -> list[str]:
  """Names accepted by `get_board`."""
  return sorted(BOARDS)


def get_board(board: str | Mapping[str, Any] | Board) -> Board:
  """Returns a `Board` from a name, a dict of its fields, or a `Board`.

  A dict needs `name`, `sram` and `flash` (bytes) and `clock_hz`; optional
  `core`, `macs_per_cycle`, `note`.

  Raises:
    ValueError: unknown name, unknown/missing dict fields, or a budget,
      clock or `macs_per_cycle` that is not a finite positive number (bools
      are rejected); the message names the field.
  """
  if isinstance(board, Board):
    return board
  if isinstance(board, str):
    key = board.lower()
    if key not in BOARDS:
      raise ValueError(f'Unknown board {board!r}. Known boards: '
                       f'{", ".join(list_boards())} (or pass a dict with '
                       'name, sram, flash, clock_hz).')
    return BOARDS[key]
  if isinstance(board, Mapping):
    bad = sorted(set(board) - _FIELDS)
    missing = sorted({'name', 'sram', 'flash', 'clock_hz'} - set(board))
    if bad or missing:
      raise ValueError(f'Board dict has unknown fields {bad} / misses '
                       f'{missing}; fields: {sorted(_FIELDS)}.')
    b = dict(board)
    mpc = b.get('macs_per_cycle', _M4)
    b['macs_per_cycle'] = dict(mpc) if isinstance(mpc, Mapping) else mpc
    return Board(**b)
  raise ValueError(f'board must be a name, dict or Board, got {board!r}.')


def _profile_sizes(profile: Mapping[str, Any], precision: str
                   ) -> tuple[int, int, str]:
  """(SRAM bytes, flash bytes, SRAM source) of a profile, validated."""
  if not isinstance(profile, Mapping):
    raise ValueError(f'profile must be a dict from '
                     f'tinyrobust.hardware.profile(), got {profile!r}.')
  sec = profile.get(precision)
  if not isinstance(sec, Mapping) or 'flash' not in sec:
    raise ValueError(f'profile has no {precision!r} section with a flash '
                     'size; build it with tinyrobust.hardware.profile().')
  source = ('tflm_arena' if sec.get('tflm_arena') is not None
            else 'sram_liveness')
  if source not in sec:
    raise ValueError(f"profile[{precision!r}] has neither 'tflm_arena' nor "
                     "'sram_liveness'; build it with "
                     'tinyrobust.hardware.profile().')
  sram = check_number(f'profile[{precision!r}][{source!r}]', sec[source],
                      positive=False)
  flash = check_number(f"profile[{precision!r}]['flash']", sec['flash'],
                       positive=False)
  return int(sram), int(flash), source


def fits(profile: Mapping[str, Any], board, *, precision: str = 'int8'
         ) -> dict[str, Any]:
  """Checks a profile against a board's SRAM and flash budgets.

  SRAM use is the measured TFLM arena (`tflm_arena`) when the profile has it,
  else the `sram_liveness` estimate; flash use is the flatbuffer size.

  Args:
    profile: a dict from `profile()` (needs `profile[precision]['flash']`
      and `sram_liveness` or `tflm_arena`; `macs` for latency).
    board: name, dict or `Board`.
    precision: 'int8' or 'float32'.

  Returns:
    `{'board', 'precision', 'fits', 'sram': {'used', 'budget', 'excess',
    'source'}, 'flash': {...}, 'exceeded': [names of exceeded budgets],
    'latency_s_estimate'}`; `excess` is bytes over budget (0 when it fits).
  """
  b = get_board(board)
  if precision not in PRECISIONS:
    raise ValueError(f"precision must be 'float32' or 'int8', got "
                     f'{precision!r}.')
  sram, flash, source = _profile_sizes(profile, precision)
  out = {
      'board': b.name, 'precision': precision,
      'sram': {'used': sram, 'budget': b.sram,
               'excess': max(0, sram - b.sram), 'source': source},
      'flash': {'used': flash, 'budget': b.flash,
                'excess': max(0, flash - b.flash)},
  }
  out['exceeded'] = [k for k in ('sram', 'flash') if out[k]['excess'] > 0]
  out['fits'] = not out['exceeded']
  macs = profile.get('macs')
  if macs is not None:
    macs = check_number("profile['macs']", macs, positive=False)
  mpc = b.macs_per_cycle.get(precision)
  out['latency_s_estimate'] = (float(macs) / (mpc * b.clock_hz)
                               if macs is not None and mpc else None)
  return out
