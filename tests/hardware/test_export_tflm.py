"""TFLite export (float32/int8), LiteRT agreement and the TFLM arena.

Conversions are slow, so each flatbuffer is built once per module.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust import models
from tinyrobust.hardware import counters
from tinyrobust.hardware import export
from tinyrobust.hardware import persistent
from tinyrobust.hardware import tflite_graph
from tinyrobust.hardware import tflm

SHAPE = (8, 8, 1)


@pytest.fixture(scope='module')
def cnn():
  model = models.get_model('cnn', 10, features=(32, 64))
  v = model.init(jax.random.key(0), jnp.zeros((1,) + SHAPE))
  x = np.random.default_rng(0).uniform(0, 1, (64,) + SHAPE).astype(np.float32)
  f32 = export.export_tflite(model, v, SHAPE)
  i8 = export.export_tflite(model, v, SHAPE, quantize='int8',
                            representative_data=x)
  return model, v, x, f32, i8


@pytest.fixture(scope='module')
def measured(cnn):
  return {'float32': tflm.measure_tflm(cnn[3]),
          'int8': tflm.measure_tflm(cnn[4])}


def test_float_export_agrees_with_jax(cnn):
  model, v, x, f32, _ = cnn
  agree = export.agreement(f32, model, v, x[:16])
  assert agree['max_abs_diff'] <= 1e-4
  assert agree['top1_agreement'] == 1.0


def test_agreement_is_nan_not_perfect_on_nan_outputs(cnn):
  # argmax(NaN) == 0 on both sides would read as top-1 agreement 1.0.
  model, v, x, f32, _ = cnn
  nan_v = jax.tree_util.tree_map(lambda a: np.full_like(a, np.nan), v)
  agree = export.agreement(f32, model, nan_v, x[:4])
  assert np.isnan(agree['top1_agreement']) and np.isnan(agree['max_abs_diff'])
  assert agree['nonfinite_outputs'] == 4 * 10
  bad_x = x[:4].copy()
  bad_x[1, 0, 0, 0] = np.inf
  with pytest.raises(ValueError, match='1 non-finite'):
    export.agreement(f32, model, v, bad_x)


def test_int8_is_3x_smaller_and_close(cnn):
  model, v, x, f32, i8 = cnn
  assert len(f32) >= 3 * len(i8)
  g = tflite_graph.parse(i8)
  assert g.subgraphs[0].tensors[g.subgraphs[0].inputs[0]].dtype == 'INT8'
  agree = export.agreement(i8, model, v, x[:32])
  ref = np.asarray(model.apply(v, x[:32]))
  # Quantisation error well below the logits' spread.
  assert agree['max_abs_diff'] < 0.1 * (ref.max() - ref.min())


def test_tflm_arena_positive_and_predicted(cnn, measured):
  model, v, _, f32, i8 = cnn
  c = counters.count(model, v, SHAPE)
  for precision, fb in (('float32', f32), ('int8', i8)):
    m = measured[precision]
    assert m['total'] > 0 and m['head'] > 0 and m['tail'] > 0
    assert m['total'] == m['head'] + m['tail']
    g = tflite_graph.parse(fb)
    # The replayed TFLM planner gives the head exactly.
    assert tflite_graph.planned_arena(g) == m['head']
    est = tflite_graph.planned_arena(g) + persistent.from_tflite(g, precision)
    assert abs(est - m['total']) <= 0.15 * m['total']
    assert abs(c[precision]['sram_liveness'] - m['total']) <= 0.15 * m['total']
    # The study's proxy misses the persistent part.
    assert c[precision]['sram_study'] < m['total']


def test_parse_allocations_report():
  text = ('[RecordingMicroAllocator] Arena allocation total 4832 bytes\n'
          '[RecordingMicroAllocator] Arena allocation head 3072 bytes\n'
          '[RecordingMicroAllocator] Arena allocation tail 1760 bytes\n'
          "[RecordingMicroAllocator] 'TfLiteEvalTensor data' used 264 bytes "
          'with alignment overhead (requested 264 bytes for 11 allocations)\n')
  r = tflm.parse_allocations(text)
  assert (r['total'], r['head'], r['tail']) == (4832, 3072, 1760)
  assert r['breakdown'] == {'TfLiteEvalTensor data': 264}
  with pytest.raises(ValueError, match='allocation report'):
    tflm.parse_allocations('nothing here')


def test_tflm_bad_inputs(cnn):
  with pytest.raises(ValueError, match='flatbuffer'):
    tflm.measure_tflm(b'not a model at all')
  with pytest.raises(ValueError, match='does not fit any TFLM arena'):
    tflm.measure_tflm(cnn[3], arena_size=512, max_arena=1024)


class _Sorts(nn.Module):

  @nn.compact
  def __call__(self, x, train=False):
    return nn.Dense(3)(jnp.sort(x, axis=-1))


def test_unsupported_op_is_named():
  model = _Sorts()
  v = model.init(jax.random.key(0), jnp.zeros((1, 5)))
  with pytest.raises(ValueError, match="unsupported op.*'sort'"):
    export.export_tflite(model, v, (5,))


def test_export_bad_arguments(cnn):
  model, v, x, _, _ = cnn
  with pytest.raises(ValueError, match='quantize'):
    export.export_tflite(model, v, SHAPE, quantize='int4')
  with pytest.raises(ValueError, match='representative_data'):
    export.export_tflite(model, v, SHAPE, quantize='int8')
  with pytest.raises(ValueError, match='representative_data'):
    export.export_tflite(model, v, SHAPE, quantize='int8',
                         representative_data=x[:, :4])
  with pytest.raises(ValueError, match='input_shape'):
    export.export_tflite(model, v, (8, -8, 1))
  assert export.unsupported_ops(
      "error: 'vhlo.fft_v1' op is not part of the vhlo support yet") == ['fft']
