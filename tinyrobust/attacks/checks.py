"""Input validation for attack kernels, raising ValueError before compilation.

Two levels: `check_shapes` looks only at shapes and dtypes, so it also runs
while tracing under `jit`/`vmap`; `check_inputs` also inspects values (finite
inputs, eps >= 0, labels in range) and therefore needs concrete arrays. The
kernels call both when their inputs are concrete; inside a user's `jit` only
the shape checks can run, so call `check_inputs` on the host data first (as
`tinyrobust.evaluate` does).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

from tinyrobust.attacks import losses
from tinyrobust.attacks import loops
from tinyrobust.attacks import norms
from tinyrobust.attacks import threat

# Step-loop modes of `loops.run_loop` (besides an int fori unroll factor).
LOOPS = loops.LOOPS


def is_traced(*arrays: Any) -> bool:
  """True if any argument is an abstract tracer (inside jit/vmap/grad)."""
  return any(isinstance(a, jax.core.Tracer) for a in arrays)


def check_shapes(x: Any, y: Any, eps: Any) -> None:
  """Static checks on shapes/dtypes of `x [B, ...]`, `y [B]`, eps `[]`/`[B]`."""
  if eps is None:
    raise ValueError('eps must be a real number or array (scalar or [B]), '
                     'got None.')
  if isinstance(eps, (list, tuple)):
    try:
      eps = np.asarray(eps)
    except ValueError as err:
      raise ValueError(f'eps must be a real number or array (scalar or [B]), '
                       f'got the ragged list {eps!r}.') from err
  x_shape, y_shape, e_shape = np.shape(x), np.shape(y), np.shape(eps)
  if len(x_shape) < 1:
    raise ValueError(f'x must have a leading batch axis, got shape {x_shape}.')
  if x_shape[0] == 0:
    raise ValueError(f'x is an empty batch (shape {x_shape}): an attack '
                     'needs at least one example.')
  if not np.issubdtype(np.result_type(x), np.floating):
    raise ValueError(f'x must be a floating-point array, got dtype '
                     f'{np.result_type(x)}.')
  if len(y_shape) != 1 or y_shape[0] != x_shape[0]:
    raise ValueError(f'y must have shape [B] = [{x_shape[0]}] to match x of '
                     f'shape {x_shape}, got shape {y_shape}.')
  if not np.issubdtype(np.result_type(y), np.integer):
    raise ValueError(f'y must hold integer class labels, got dtype '
                     f'{np.result_type(y)}.')
  e_type = np.result_type(eps) if not isinstance(eps, str) else np.str_
  if not (np.issubdtype(e_type, np.floating) or
          np.issubdtype(e_type, np.integer)) or np.issubdtype(e_type, np.bool_):
    raise ValueError(f'eps must be a real number or array (scalar or [B]), '
                     f'got {eps!r} of type {type(eps).__name__}.')
  if e_shape not in ((), (x_shape[0],)):
    raise ValueError(f'eps must be a scalar or have shape [B] = '
                     f'[{x_shape[0]}], got shape {e_shape}.')


def check_inputs(x: Any, y: Any, eps: Any,
                 num_classes: int | None = None) -> None:
  """Validates concrete attack inputs; raises ValueError naming the problem.

  Args:
    x: `[B, ...]` floating inputs; must be finite.
    y: `[B]` integer labels (targets for targeted attacks).
    eps: scalar or `[B]` radius in input units; finite and >= 0.
    num_classes: if given, labels must lie in `[0, num_classes)`.
  """
  check_shapes(x, y, eps)
  if is_traced(x, y, eps):
    raise ValueError('check_inputs needs concrete arrays, got tracers; call it '
                     'outside jit on the host data.')
  x, y, eps = np.asarray(x), np.asarray(y), np.asarray(eps)
  if not np.all(np.isfinite(x)):
    bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
    raise ValueError(f'x contains {bad} NaN/inf value(s); inputs must be '
                     'finite.')
  if not np.all(np.isfinite(eps)) or np.any(eps < 0):
    bad = eps[~(np.isfinite(eps) & (eps >= 0))] if eps.ndim else eps
    raise ValueError(f'eps must be finite and >= 0, got {bad.tolist()}.')
  if y.size:
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or (num_classes is not None and hi >= num_classes):
      allowed = f'[0, {num_classes})' if num_classes is not None else '>= 0'
      raise ValueError(f'labels must be in {allowed}, got values in '
                       f'[{lo}, {hi}].')


# Clean inputs may exceed the clip range by this fraction of (hi - lo)
# (float rounding of data stored in other units).
CLIP_TOLERANCE = 1e-6


def check_in_clip(x: Any, lo: Any, hi: Any, *, eps: Any = None,
                  name: str = 'clip') -> None:
  """The clean inputs must lie inside the clip range.

  Args:
    x: `[B, ...]` concrete inputs.
    lo, hi: the clip bounds (scalars or arrays broadcastable to one
      example, e.g. `[C]` per channel); None for no clip.
    eps: the attack's radius (scalar or `[B]`), or None: examples attacked
      at eps == 0 are returned exactly as they are, so only the others are
      checked.
    name: how the caller calls the range (in the message).

  Raises:
    ValueError: some values of `x` lie outside `[lo, hi]` by more than
      `CLIP_TOLERANCE * (hi - lo)`, naming the range, the data's min/max
      per channel (last axis) and the count of offending values. Clipping
      such data would move x_adv outside the eps ball around x.
  """
  if lo is None or hi is None:
    return
  x = np.asarray(x)
  if eps is not None:
    e = np.asarray(eps)
    x = x[e > 0] if e.ndim else (x if e > 0 else x[:0])
  if not x.size:
    return
  lo64, hi64 = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
  tol = CLIP_TOLERANCE * (hi64 - lo64)
  outside = (x < lo64 - tol) | (x > hi64 + tol)
  bad = int(np.count_nonzero(outside))
  if not bad:
    return
  flat = x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x.reshape(-1, 1)
  mins, maxs = flat.min(0), flat.max(0)
  show = min(len(mins), 8)
  per = ', '.join(f'[{float(a):.4g}, {float(b):.4g}]'
                  for a, b in zip(mins[:show], maxs[:show]))
  more = f' (first {show} of {len(mins)} channels)' if len(mins) > show else ''
  rng = _range_text(lo64, hi64)
  raise ValueError(
      f'{name}={rng} does not contain the data: {bad} of {x.size} input '
      f'values lie outside it (tolerance {CLIP_TOLERANCE:g} of the range); '
      f'the data spans, per channel (min, max): {per}{more}. Clipping would '
      'move x_adv far outside the eps ball around x: give a clip range '
      'that contains the clean inputs (in their units), or none.')


def _range_text(lo: np.ndarray, hi: np.ndarray) -> str:
  if lo.ndim == 0 and hi.ndim == 0:
    return f'({float(lo):g}, {float(hi):g})'
  lo_b, hi_b = np.broadcast_arrays(lo, hi)
  return (f'(lo={np.round(lo_b.reshape(-1)[:8], 4).tolist()}, '
          f'hi={np.round(hi_b.reshape(-1)[:8], 4).tolist()})')


def check_static_options(*, norm: str, loss: str, steps: Any,
                         step_size: Any, rel_step_size: Any,
                         random_start: Any, targeted: Any, clip: Any,
                         restarts: Any, loop: Any) -> None:
  """Validates a kernel factory's static options (see `make_pgd`)."""
  norms.check_norm(norm)
  losses.get_loss(loss)
  if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) \
      or steps < 1:
    raise ValueError(f'steps must be an int >= 1, got {steps!r}.')
  for name, v in (('step_size', step_size), ('rel_step_size', rel_step_size)):
    if v is not None and (isinstance(v, bool) or not _is_real(v)
                          or not math.isfinite(v) or v <= 0):
      raise ValueError(f'{name} must be None or a finite number > 0, got '
                       f'{v!r}.')
  if step_size is not None and rel_step_size is not None:
    raise ValueError('Give at most one of step_size (input units) and '
                     f'rel_step_size (multiple of eps), got {step_size!r} and '
                     f'{rel_step_size!r}.')
  for name, v in (('random_start', random_start), ('targeted', targeted)):
    if not isinstance(v, bool):
      raise ValueError(f'{name} must be a bool, got {v!r}.')
  threat.check_clip(clip)
  if isinstance(restarts, bool) or not isinstance(
      restarts, (int, np.integer)) or restarts < 1:
    raise ValueError(f'restarts must be an int >= 1, got {restarts!r}.')
  if restarts > 1 and not random_start:
    raise ValueError(f'restarts={restarts} needs random_start=True (restarts '
                     'without a random start are identical).')
  loops.check_loop(loop)


def check_apgd_options(*, loss, losses, steps, restarts, rho,
                       n_target_classes, eot_iter, random_apply, loop,
                       chunk) -> None:
  """Validates `make_apgd`'s options (`losses`: the valid loss names)."""
  if loss not in losses:
    raise ValueError(f'Unknown APGD loss {loss!r}. Valid: '
                     f'{", ".join(losses)}.')
  for name, v in (('steps', steps), ('restarts', restarts),
                  ('n_target_classes', n_target_classes),
                  ('eot_iter', eot_iter)):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
      raise ValueError(f'{name} must be an int >= 1, got {v!r}.')
  if isinstance(rho, bool) or not _is_real(rho) or not (
      math.isfinite(rho) and 0.0 <= rho <= 1.0):
    raise ValueError(f'rho must be a number in [0, 1], got {rho!r}.')
  if not isinstance(random_apply, bool):
    raise ValueError(f'random_apply must be a bool, got {random_apply!r}.')
  loops.check_loop(loop)
  loops.check_chunk(chunk)


def _is_real(v: Any) -> bool:
  return isinstance(v, (int, float, np.integer, np.floating))
