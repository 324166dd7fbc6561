"""Bad hardware inputs fail early with a message naming the field/value."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust import hardware
from tinyrobust import models
from tinyrobust.hardware import boards
from tinyrobust.hardware import counters
from tinyrobust.hardware import export
from tinyrobust.hardware import shapes

KB = 1024
GOOD = {'name': 'b', 'sram': 64 * KB, 'flash': 256 * KB, 'clock_hz': 1e8}


@pytest.mark.parametrize('field, value', [
    ('sram', math.nan), ('sram', -1), ('sram', 0), ('flash', math.inf),
    ('flash', -5.0), ('sram', True), ('flash', False), ('clock_hz', '1e8'),
    ('clock_hz', None), ('sram', np.bool_(True)),
])
def test_board_budget_rejected(field, value):
  with pytest.raises(ValueError) as e:
    hardware.get_board({**GOOD, field: value})
  assert field in str(e.value) and repr(value) in str(e.value)
  with pytest.raises(ValueError, match=field):  # the dataclass checks too
    boards.Board(**{**GOOD, field: value})


@pytest.mark.parametrize('mpc, needle', [
    ({'int8': -0.3}, "macs_per_cycle['int8']"),
    ({'float32': math.nan}, "macs_per_cycle['float32']"),
    ({'int8': True}, "macs_per_cycle['int8']"),
    ({'int4': 1.0}, 'int4'),
    (0.5, 'macs_per_cycle must be a dict'),
])
def test_macs_per_cycle_rejected(mpc, needle):
  with pytest.raises(ValueError) as e:
    hardware.get_board({**GOOD, 'macs_per_cycle': mpc})
  assert needle in str(e.value)


def test_numpy_numbers_accepted():
  b = hardware.get_board({**GOOD, 'sram': np.int64(64 * KB),
                          'clock_hz': np.float32(1e8),
                          'macs_per_cycle': {'int8': np.float64(0.5)}})
  assert b.sram == 64 * KB


def _profile(sram, flash, macs=1_000_000):
  sec = {'flash': flash, 'sram_liveness': sram}
  return {'macs': macs, 'float32': dict(sec), 'int8': dict(sec)}


@pytest.mark.parametrize('prof, needle', [
    (_profile(-10, 100), "profile['int8']['sram_liveness']"),
    (_profile(10, -100), "profile['int8']['flash']"),
    (_profile(math.nan, 100), "profile['int8']['sram_liveness']"),
    (_profile(10, math.inf), "profile['int8']['flash']"),
    (_profile(10, True), "profile['int8']['flash']"),
    (_profile(10, 100, macs=-1), "profile['macs']"),
    (_profile(10, 100, macs=math.nan), "profile['macs']"),
    ({'int8': {'flash': 10, 'sram_liveness': 1, 'tflm_arena': math.nan}},
     "profile['int8']['tflm_arena']"),
])
def test_fits_rejects_bad_profile_values(prof, needle):
  with pytest.raises(ValueError) as e:
    hardware.fits(prof, 'stm32f446re')
  assert needle in str(e.value)


def test_fits_closed_form_latency_and_tflm_source():
  b = {**GOOD, 'macs_per_cycle': {'int8': 0.25}}
  prof = _profile(10 * KB, 100 * KB, macs=5_000_000)
  prof['int8']['tflm_arena'] = 70 * KB
  r = hardware.fits(prof, b)
  assert r['sram'] == {'used': 70 * KB, 'budget': 64 * KB, 'excess': 6 * KB,
                       'source': 'tflm_arena'}
  assert r['exceeded'] == ['sram'] and not r['fits']
  assert r['latency_s_estimate'] == pytest.approx(5e6 / (0.25 * 1e8))


# ------------------------------------------------- batch axis in shapes ----


def test_batch_axis_named_when_model_declares_shape():
  model = models.get_model('protonn', 3, num_prototypes=4,
                           input_shape=(5,))
  v = model.init(jax.random.key(0), jnp.zeros((1, 5)))
  with pytest.raises(ValueError) as e:
    counters.count(model, v, (1, 5))
  assert '(1, 5)' in str(e.value) and '(5,)' in str(e.value)
  assert 'batch axis' in str(e.value)
  with pytest.raises(ValueError, match=r'\(1, 5\).*\(5,\)'):
    hardware.profile(model, v, (1, 5), measure=False)
  with pytest.raises(ValueError, match=r'\(1, 5\).*\(5,\)'):
    export.export_tflite(model, v, (1, 5))
  assert counters.count(model, v, (5,))['params'] == 5 * 5 + 5 * 4 + 3 * 4


def test_batch_axis_uses_default_shape_and_mlp_input_shape():
  model = models.get_model('protonn', 3)  # declares (10,) by default
  with pytest.raises(ValueError, match=r'\(1, 10\).*\(10,\)'):
    shapes.example_shape((1, 10), model)
  assert shapes.example_shape((1, 12), model) == (1, 12)  # not (1, *decl)
  mlp = models.get_model('mlp', 3, hidden=(4,), input_shape=(5,))
  with pytest.raises(ValueError, match=r'\(1, 5\).*\(5,\)'):
    shapes.example_shape((1, 5), mlp)


@pytest.mark.parametrize('bad', [5, '55', (), (0, 3), (3.5,), (True, 2),
                                 None])
def test_example_shape_rejects_non_shapes(bad):
  with pytest.raises(ValueError, match='input_shape') as e:
    shapes.example_shape(bad)
  assert repr(bad) in str(e.value)


def test_example_shape_accepts_numpy_ints():
  assert shapes.example_shape(np.array([8, 8, 1])) == (8, 8, 1)


# ---------------------------------------------------- export validation ----


class _Dense(nn.Module):

  @nn.compact
  def __call__(self, x, train=False):
    return nn.Dense(3)(x)


@pytest.mark.parametrize('bad, count', [(math.nan, 1), (math.inf, 1)])
def test_int8_calibration_rejects_non_finite(bad, count):
  m = _Dense()
  v = m.init(jax.random.key(0), jnp.zeros((1, 5)))
  rep = np.random.default_rng(0).normal(size=(16, 5)).astype(np.float32)
  rep[3, 2] = bad
  rep[7] = bad  # a whole example: 5 more
  with pytest.raises(ValueError) as e:
    export.export_tflite(m, v, (5,), quantize='int8', representative_data=rep)
  msg = str(e.value)
  assert f'{count + 5} non-finite' in msg and '2 of 16 example' in msg, msg


class _Eigh(nn.Module):

  @nn.compact
  def __call__(self, x, train=False):
    h = nn.Dense(4)(x)
    w, _ = jnp.linalg.eigh(h[:, :, None] * h[:, None, :])
    return nn.Dense(3)(w)


class _Callback(nn.Module):

  @nn.compact
  def __call__(self, x, train=False):
    h = nn.Dense(4)(x)
    h = jax.pure_callback(np.tanh, jax.ShapeDtypeStruct(h.shape, h.dtype), h)
    return nn.Dense(3)(h)


@pytest.mark.parametrize('module, op', [(_Eigh, 'eigh'),
                                        (_Callback, 'pure_callback')])
def test_unsupported_primitive_is_named(module, op):
  m = module()
  v = m.init(jax.random.key(0), jnp.zeros((1, 5)))
  assert op in export.primitive_names(
      jax.make_jaxpr(lambda x: m.apply(v, x))(jnp.zeros((1, 5))))
  with pytest.raises(ValueError, match=f"unsupported op.*'{op}'"):
    export.export_tflite(m, v, (5,))


def test_primitive_names_sees_nested_jaxprs():
  def f(x):
    y = jax.lax.cond(x.sum() > 0, jnp.sin, jnp.cos, x)
    return jax.lax.scan(lambda c, t: (c + jnp.exp(t), None), 0.0, y)[0]
  names = export.primitive_names(jax.make_jaxpr(f)(jnp.ones(3)))
  assert {'cond', 'sin', 'cos', 'scan', 'exp'} <= names
