"""Misuse sweep, hardware: the hardware cost model: boards, profiles, counts,
TFLite export and the TFLite-Micro measurement.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.misuse import sweep

Case, Verdict, pkg = sweep.Case, sweep.Verdict, sweep.pkg


_BOARD = {'name': 'b', 'sram': 65536, 'flash': 262144, 'clock_hz': 1e8}


def _profile_dict(sram=1000, flash=5000, macs=1e6):
  sec = {'flash': flash, 'sram_liveness': sram}
  return {'macs': macs, 'float32': dict(sec), 'int8': dict(sec)}


def _fits(profile=None, **board):
  def fn(ctx):
    del ctx
    hardware = pkg('tinyrobust.hardware')
    return hardware.fits(profile or _profile_dict(), {**_BOARD, **board})
  return fn


@functools.lru_cache(maxsize=None)
def _protonn5():
  models = pkg('tinyrobust.models')
  m = models.get_model('protonn', 3, num_prototypes=4, input_shape=(5,))
  return m, m.init(jax.random.key(0), jnp.zeros((1, 5)))


def _count(shape):
  def fn(ctx):
    del ctx
    hardware = pkg('tinyrobust.hardware')
    return hardware.count(*_protonn5(), shape)
  return fn


def _count_mlp_batch_axis(ctx):
  """An MLP that declares no input shape: only a warning is possible."""
  hardware = pkg('tinyrobust.hardware')
  model, v, _ = ctx.mlp()
  out = hardware.count(model, v, (1, 8, 8, 1))
  return Verdict('silent', f'counted {out["macs"]} MACs for shape (1, 8, 8, '
                 '1) (undeclared model: a warning at most)')


def _export(module_kind: str, rep_bad=None):
  def fn(ctx):
    del ctx
    export = pkg('tinyrobust.hardware.export')

    class M(nn.Module):

      @nn.compact
      def __call__(self, x, train=False):
        h = nn.Dense(4)(x)
        if module_kind == 'eigh':
          h = jnp.linalg.eigh(h[:, :, None] * h[:, None, :])[0]
        elif module_kind == 'callback':
          h = jax.pure_callback(np.tanh, jax.ShapeDtypeStruct(h.shape,
                                                              h.dtype), h)
        return nn.Dense(3)(h)

    m = M()
    v = m.init(jax.random.key(0), jnp.zeros((1, 5)))
    if rep_bad is None:
      return export.export_tflite(m, v, (5,))
    rep = np.random.default_rng(0).normal(size=(16, 5)).astype(np.float32)
    rep[2, 1] = rep_bad
    out = export.export_tflite(m, v, (5,), quantize='int8',
                               representative_data=rep)
    agree = export.agreement(out, m, v, rep[:8])
    return Verdict('silent', f'calibrated on {rep_bad}; agreement {agree}')
  return fn


def _measure_garbage(ctx):
  del ctx
  hardware = pkg('tinyrobust.hardware')
  return hardware.measure_tflm(b'not a flatbuffer at all')


def _hardware_cases() -> list[Case]:
  g = 'hardware'
  nan, inf = float('nan'), float('inf')
  return [
      Case('board_sram_nan', g, _fits(sram=nan), ('sram', 'nan')),
      Case('board_sram_negative', g, _fits(sram=-1), ('sram', '-1')),
      Case('board_flash_negative', g, _fits(flash=-1024), ('flash', '-1024')),
      Case('board_flash_inf', g, _fits(flash=inf), ('flash', 'inf')),
      Case('board_sram_bool', g, _fits(sram=True), ('sram', 'True')),
      Case('board_clock_string', g, _fits(clock_hz='80MHz'),
           ('clock_hz', '80MHz')),
      Case('board_macs_per_cycle_negative', g, _fits(
          macs_per_cycle={'int8': -0.3}), ('macs_per_cycle', '-0.3')),
      Case('board_unknown_name', g, lambda c: pkg(
          'tinyrobust.hardware').get_board('esp32'),
           ("'esp32'",)),
      Case('profile_negative_sram', g, _fits(_profile_dict(sram=-10)),
           ('sram_liveness', '-10')),
      Case('profile_nan_flash', g, _fits(_profile_dict(flash=nan)),
           ('flash', 'nan')),
      Case('profile_negative_macs', g, _fits(_profile_dict(macs=-5)),
           ('macs', '-5')),
      Case('fits_precision_int4', g, lambda c: pkg(
          'tinyrobust.hardware').fits(
              _profile_dict(), _BOARD, precision='int4'), ("'int4'",)),
      Case('count_batch_axis_declared', g, _count((1, 5)), ('(1, 5)', '(5,)')),
      # Documented limitation: a model that declares no input shape cannot
      # tell a batch axis from a feature axis; a warning at most.
      Case('count_batch_axis_undeclared_mlp', g, _count_mlp_batch_axis,
           expect='silent'),
      Case('count_shape_int', g, _count(5), ('input_shape', '5')),
      Case('count_shape_zero', g, _count((0,)), ('(0,)',)),
      Case('export_int8_nan_calibration', g, _export('dense', nan),
           ('non-finite',), isolated=True),
      Case('export_int8_inf_calibration', g, _export('dense', inf),
           ('non-finite',), isolated=True),
      Case('export_eigh', g, _export('eigh'), ('eigh',)),
      Case('export_pure_callback', g, _export('callback'),
           ('pure_callback',)),
      Case('measure_tflm_garbage', g, _measure_garbage, ('flatbuffer',)),
  ]


CASES = _hardware_cases()


@pytest.mark.parametrize('case', CASES, ids=sweep.ids(CASES))
def test_hardware_misuse(case, misuse_ctx):
  sweep.check(case, misuse_ctx)
