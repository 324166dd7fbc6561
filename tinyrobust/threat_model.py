"""Where the perturbation lives: the model's input or the sensor signal.

The study perturbed each model's own input (standardised windows, MFCCs,
window features). Its attack model says the adversary perturbs the observed
sensor signal, so `space='signal'` attacks `model(normalise(x_raw))`: the
perturbation is on the raw IMU window in physical units and the
normalisation (the dataset's train-split standardisation) is part of the
differentiable forward pass.

Implemented signal spaces:

* AURITUS raw windows (`channels='raw6'`, `normalisation='standardise'`):
  the raw window `x_raw = x * train_std + train_mean` in g (acc) and deg/s
  (gyro), clipped per channel to the sensor ranges (+-4 g, +-500 deg/s,
  `meta['channel_range']` of the unnormalised loader). One eps grid is in
  **g**; on the gyro channels the radius is `eps * gyro_per_g` deg/s, with
  `gyro_per_g` = mean gyro train std / mean acc train std unless the config
  states it (`threat.gyro_per_g`), so one eps is the same fraction of the
  typical signal on both sensors. The value used is reported.

Not implemented yet (a clear error names them): the Speech Commands
waveform through the MFCC front-end, and AURITUS window features through
`har_features`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

SPACES = ('input', 'signal')


@dataclasses.dataclass(frozen=True)
class SignalSpace:
  """An attack problem in signal units.

  Attributes:
    apply_fn: `apply_fn(variables, x_signal) -> logits` (normalises first).
    x: the evaluation inputs in signal units.
    clip: `(lo, hi)` per-channel arrays (sensor ranges).
    eps_scale: per-channel eps scale (1 on acc, `gyro_per_g` on gyro).
    eps_units: e.g. 'g (acc); gyro eps x 130.2 deg/s per g'.
    info: numbers behind the conversion, for the results file.
  """
  apply_fn: Callable[[Any, Any], Any]
  x: np.ndarray
  clip: tuple[np.ndarray, np.ndarray]
  eps_scale: np.ndarray
  eps_units: str
  info: dict[str, Any]


def signal_space(dataset, apply_fn: Callable, *,
                 gyro_per_g: float | None = None) -> SignalSpace:
  """The signal-space attack problem of `dataset` for a model `apply_fn`
  on its standardised inputs (see the module doc)."""
  from tinyrobust.data import auritus  # pylint: disable=g-import-not-at-top
  meta = dataset.meta or {}
  name = getattr(dataset, 'name', '') or meta.get('dataset', '')
  if meta.get('channels') != 'raw6' or 'train_std' not in meta:
    raise ValueError(
        f"threat.space='signal' is implemented for AURITUS raw windows "
        f"(channels='raw6', normalisation='standardise'); dataset "
        f"{name or '?'!r} with channels={meta.get('channels')!r}, "
        f"normalisation={meta.get('normalisation')!r} has no signal-space "
        "front-end here (Speech Commands waveforms and AURITUS features "
        "are not implemented yet).")
  mean = np.asarray(meta['train_mean'], np.float32)
  std = np.asarray(meta['train_std'], np.float32)
  if gyro_per_g is None:
    gyro_per_g = float(np.mean(std[3:]) / np.mean(std[:3]))
  if not np.isfinite(gyro_per_g) or gyro_per_g <= 0:
    raise ValueError(f'threat.gyro_per_g must be a positive number, got '
                     f'{gyro_per_g!r}.')
  (alo, ahi), (glo, ghi) = auritus.ACC_RANGE_G, auritus.GYRO_RANGE_DPS
  lo = np.asarray([alo] * 3 + [glo] * 3, np.float32)
  hi = np.asarray([ahi] * 3 + [ghi] * 3, np.float32)
  x = np.clip(dataset.x * std + mean, lo, hi).astype(np.float32)

  def apply_signal(variables, xs):
    return apply_fn(variables, (xs - jnp.asarray(mean)) / jnp.asarray(std))

  scale = np.asarray([1.0] * 3 + [gyro_per_g] * 3, np.float32)
  return SignalSpace(
      apply_fn=apply_signal, x=x, clip=(lo, hi), eps_scale=scale,
      eps_units=f'g (acc); gyro eps x {gyro_per_g:.4g} deg/s per g',
      info={'gyro_per_g': gyro_per_g, 'train_mean': mean.tolist(),
            'train_std': std.tolist(), 'clip_lo': lo.tolist(),
            'clip_hi': hi.tolist()})
