"""Misuse sweep, models: the model registry (`tinyrobust.models.get_model`):
options, sizes, class counts and variables of another input shape.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.misuse import sweep

Case, pkg = sweep.Case, sweep.pkg


def _model(name, *args, **kw):
  def fn(ctx):
    del ctx
    models = pkg('tinyrobust.models')
    return models.get_model(name, *args, **kw)
  return fn


def _np_int_classes(ctx):
  return _model('cnn', np.int64(10))(ctx)


def _variables_other_shape(model_name, built, other, **kw):
  def fn(ctx):
    del ctx
    models = pkg('tinyrobust.models')
    m = models.get_model(model_name, 4, **kw)
    v = m.init(jax.random.key(0), jnp.zeros((1,) + built))
    return m.apply(v, jnp.zeros((2,) + other))
  return fn


def _model_cases() -> list[Case]:
  g = 'models'
  return [
      Case('protonn_prototypes_fraction', g, _model(
          'protonn', 3, num_prototypes=2.5), ('2.5',)),
      Case('mlp_dropout_above_one', g, _model('mlp', 3, dropout=1.5),
           ('1.5',)),
      Case('mlp_hidden_zero', g, _model('mlp', 3, hidden=(0,)),
           ('hidden',)),
      Case('mlp_hidden_negative', g, _model('mlp', 3, hidden=(-4, 8)),
           ('-4',)),
      Case('mlp_hidden_int', g, _model('mlp', 3, hidden=64), ('64',)),
      Case('cnn_features_zero', g, _model('cnn', 3, features=(0, 8)),
           ('features',)),
      Case('cnn_features_negative', g, _model('cnn', 3, features=(-1,)),
           ('-1',)),
      Case('cnn_kernel_zero', g, _model('cnn', 3, kernel_size=0),
           ('kernel_size',)),
      Case('protonn_input_shape_int', g, _model(
          'protonn', 3, input_shape=5), ('input_shape', '5')),
      Case('tcn_input_shape_int', g, _model('tcn', 3, input_shape=5),
           ('input_shape', '5')),
      Case('tcn_dropout_one', g, _model('tcn', 3, dropout_rate=1.0),
           ('dropout_rate',)),
      Case('tcn_dilation_fraction', g, _model('tcn', 3, dilations=(1, 2.5)),
           ('2.5',)),
      Case('bonsai_depth_seven', g, _model('bonsai', 3, depth=7), ('7',)),
      Case('bonsai_append_bias_string', g, _model(
          'bonsai', 3, append_bias='no'), ("'no'",)),
      Case('fastrnn_hidden_fraction', g, _model(
          'fastrnn', 3, hidden_size=2.5), ('2.5',)),
      Case('dscnn_first_kernel_short', g, _model(
          'dscnn', 3, first_kernel=(10,)), ('first_kernel',)),
      Case('mcunet_config_typo', g, _model('mcunet', 3, config='mcunet-1mb'),
           ("'mcunet-1mb'",)),
      Case('resnet8_filters_empty', g, _model('resnet8', 3, filters=()),
           ('filters',)),
      Case('model_unknown', g, _model('resnet9', 3), ("'resnet9'",)),
      Case('model_option_typo', g, _model('cnn', 3, featurs=(8,)),
           ('featurs',)),
      Case('num_classes_one', g, _model('cnn', 1), ('1',)),
      Case('num_classes_fraction', g, _model('cnn', 10.5), ('10.5',)),
      Case('num_classes_numpy_int', g, _np_int_classes, valid=True),
      Case('variables_other_shape_cnn', g, _variables_other_shape(
          'cnn', (8, 8, 1), (8, 8, 3), features=(4,)), ('built for',)),
      Case('variables_other_shape_protonn', g, _variables_other_shape(
          'protonn', (5,), (7,), input_shape=(5,)), ('(5,)',)),
  ]


CASES = _model_cases()


@pytest.mark.parametrize('case', CASES, ids=sweep.ids(CASES))
def test_models_misuse(case, misuse_ctx):
  sweep.check(case, misuse_ctx)
