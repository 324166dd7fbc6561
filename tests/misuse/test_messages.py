"""Issue-11 bad inputs (models, hardware, I/O): one row each.

Every row asserts the exception type and that the message names the bad
value (and, where it matters, the option or file). The package-wide sweep
with the other areas is the rest of tests/misuse/ (`sweep.py`).
"""

from __future__ import annotations

import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust import hardware
from tinyrobust import fileio
from tinyrobust import models
from tinyrobust.hardware import export

BOARD = {'name': 'b', 'sram': 65536, 'flash': 262144, 'clock_hz': 1e8}


def _profile(sram=1000, flash=5000, macs=1e6):
  sec = {'flash': flash, 'sram_liveness': sram}
  return {'macs': macs, 'float32': dict(sec), 'int8': dict(sec)}


def _fits(profile=None, **board):
  return lambda tmp: hardware.fits(profile or _profile(), {**BOARD, **board})


def _model(name, **kw):
  return lambda tmp: models.get_model(name, 3, **kw)


def _protonn5():
  m = models.get_model('protonn', 3, num_prototypes=4, input_shape=(5,))
  return m, m.init(jax.random.key(0), jnp.zeros((1, 5)))


class _Net(nn.Module):
  op: str = 'dense'

  @nn.compact
  def __call__(self, x, train=False):
    h = nn.Dense(4)(x)
    if self.op == 'eigh':
      h = jnp.linalg.eigh(h[:, :, None] * h[:, None, :])[0]
    elif self.op == 'callback':
      h = jax.pure_callback(np.tanh, jax.ShapeDtypeStruct(h.shape, h.dtype),
                            h)
    return nn.Dense(3)(h)


def _export(op='dense', bad=None):
  def fn(tmp):
    del tmp
    m = _Net(op)
    v = m.init(jax.random.key(0), jnp.zeros((1, 5)))
    if bad is None:
      return export.export_tflite(m, v, (5,))
    rep = np.ones((8, 5), np.float32)
    rep[1, 2] = rep[4, 0] = bad
    return export.export_tflite(m, v, (5,), quantize='int8',
                                representative_data=rep)
  return fn


def _damaged(name, make):
  def fn(tmp):
    p = os.path.join(tmp, name)
    data = make(p)
    with open(p, 'wb') as f:
      f.write(data)
    loader = {'.ckpt': fileio.load_pytree, '.json': fileio.read_json,
              '.jsonl': fileio.read_jsonl}[os.path.splitext(name)[1]]
    return loader(p)
  return fn


def _ckpt_bytes(p, cut=None, extra=b''):
  fileio.save_pytree(p, {'params': {'w': np.ones((4, 4), np.float32)}})
  with open(p, 'rb') as f:
    good = f.read()
  return (good[:cut] if cut else good) + extra


def _other_width(name, built, other, **kw):
  def fn(tmp):
    del tmp
    m = models.get_model(name, 4, **kw)
    v = m.init(jax.random.key(0), jnp.zeros((1,) + built))
    return m.apply(v, jnp.zeros((2,) + other))
  return fn


def _corrupt_cifar(tmp):
  from tinyrobust import data  # pylint: disable=g-import-not-at-top
  with open(os.path.join(tmp, 'cifar10_subset.npz'), 'wb') as f:
    f.write(b'PK\x03\x04 truncated download')
  return data.load('cifar10', 'test', source='local', data_dir=tmp)


def _search(**over):
  def fn(tmp):
    import ml_collections  # pylint: disable=g-import-not-at-top
    from tinyrobust import nas  # pylint: disable=g-import-not-at-top
    from tinyrobust.nas import search  # pylint: disable=g-import-not-at-top
    from experiments.configs import common  # pylint: disable=g-import-not-at-top
    c = common.base_config()
    c.search = search.default_search_config()
    c.data.name = 'digits'
    c.model = ml_collections.ConfigDict({'name': 'mlp', 'kwargs': {}})
    c.search.space = 'mlp'
    c.attack.eps_grid = (0.05,)
    with c.ignore_type():
      for k, v in over.items():
        if k == 'model':
          c.model = ml_collections.ConfigDict(v)
        else:
          c.search[k] = v
    out = os.path.join(tmp, 'search')
    try:
      return nas.run_search(c, out)
    finally:
      assert not os.path.exists(out), 'workdir written before the error'
  return fn


def _attack_call(apply_fn=None, eps=0.1, attacks=None):
  def fn(tmp):
    del tmp
    from tinyrobust import attacks as attacks_lib  # pylint: disable=g-import-not-at-top
    from tinyrobust import evaluate  # pylint: disable=g-import-not-at-top
    w = jnp.ones((4, 3))
    x, y = np.zeros((5, 4), np.float32), np.zeros(5, np.int32)
    f = apply_fn or (lambda v, x: x @ v)
    if attacks is not None:
      return evaluate.evaluate_robustness(f, w, (x, y), attacks=attacks,
                                          eps_grid=[0.1], batch_size=4, seed=0)
    return attacks_lib.make_pgd(f, steps=1)(w, x, y, jax.random.key(0), eps)
  return fn


def _file_workdir(tmp):
  p = os.path.join(tmp, 'run_file')
  with open(p, 'w') as f:
    f.write('x')
  return fileio.check_writable_dir(p)


# (id, fn(tmp_path_str), exception type, texts the message must contain)
ROWS = [
    # Models: integer options, rates, layer sizes, shapes.
    ('mlp_dropout_1.5', _model('mlp', dropout=1.5), ValueError,
     ('dropout', '1.5')),
    ('protonn_num_prototypes_2.5', _model('protonn', num_prototypes=2.5),
     ValueError, ('num_prototypes', '2.5')),
    ('mlp_hidden_zero', _model('mlp', hidden=(8, 0)), ValueError,
     ('hidden[1]', '0')),
    ('mlp_hidden_negative', _model('mlp', hidden=(-4,)), ValueError,
     ('hidden[0]', '-4')),
    ('cnn_features_zero', _model('cnn', features=(0, 8)), ValueError,
     ('features[0]', '0')),
    ('cnn_features_negative', _model('cnn', features=(16, -1)), ValueError,
     ('features[1]', '-1')),
    ('protonn_input_shape_int', _model('protonn', input_shape=5), ValueError,
     ('input_shape', '5')),
    ('mlp_input_shape_int', _model('mlp', input_shape=5), ValueError,
     ('input_shape', '5')),
    ('tcn_input_shape_int', _model('tcn', input_shape=5), ValueError,
     ('input_shape', '5')),
    ('tcn_dropout_rate_1', _model('tcn', dropout_rate=1.0), ValueError,
     ('dropout_rate', '1.0')),
    ('mcunet_dropout_negative', _model('mcunet', dropout=-0.1), ValueError,
     ('dropout', '-0.1')),
    ('bonsai_depth_fraction', _model('bonsai', depth=1.5), ValueError,
     ('depth', '1.5')),
    ('fastgrnn_hidden_bool', _model('fastgrnn', hidden_size=True), ValueError,
     ('hidden_size', 'True')),
    ('dscnn_filters_string', _model('dscnn', filters='64'), ValueError,
     ('filters', "'64'")),
    ('resnet8_filters_int', _model('resnet8', filters=16), ValueError,
     ('filters', '16')),
    ('cnn_variables_other_channels', _other_width(
        'cnn', (8, 8, 1), (8, 8, 3), features=(4,)), ValueError,
     ('built for inputs with 1 channels', '(2, 8, 8, 3)')),
    ('mlp_variables_other_width', _other_width(
        'mlp', (5,), (7,), hidden=(4,)), ValueError,
     ('built for inputs with 5 features', '(2, 7)')),
    # Hardware: board and profile values, batch axis, export.
    ('board_sram_nan', _fits(sram=math.nan), ValueError, ('sram', 'nan')),
    ('board_flash_negative', _fits(flash=-1024), ValueError,
     ('flash', '-1024')),
    ('board_sram_true', _fits(sram=True), ValueError, ('sram', 'True')),
    ('board_macs_per_cycle_negative', _fits(macs_per_cycle={'int8': -0.3}),
     ValueError, ("macs_per_cycle['int8']", '-0.3')),
    ('profile_sram_negative', _fits(_profile(sram=-10)), ValueError,
     ("profile['int8']['sram_liveness']", '-10')),
    ('profile_flash_nan', _fits(_profile(flash=math.nan)), ValueError,
     ("profile['int8']['flash']", 'nan')),
    ('count_batch_axis', lambda tmp: hardware.count(*_protonn5(), (1, 5)),
     ValueError, ('(1, 5)', '(5,)', 'batch axis')),
    ('profile_batch_axis', lambda tmp: hardware.profile(
        *_protonn5(), (1, 5), measure=False), ValueError, ('(1, 5)', '(5,)')),
    ('count_input_shape_int', lambda tmp: hardware.count(*_protonn5(), 5),
     ValueError, ('input_shape', '5')),
    ('export_int8_nan_calibration', _export(bad=math.nan), ValueError,
     ('2 non-finite', '2 NaN', '2 of 8 example')),
    ('export_eigh', _export('eigh'), ValueError, ("'eigh'",)),
    ('export_pure_callback', _export('callback'), ValueError,
     ("'pure_callback'",)),
    # I/O: corrupt checkpoints, configs, journals; a workdir that is a file.
    ('ckpt_truncated', _damaged('latest.ckpt', lambda p: _ckpt_bytes(p, 20)),
     ValueError, ('latest.ckpt', 'best.ckpt')),
    ('ckpt_extra_data', _damaged('best.ckpt', lambda p: _ckpt_bytes(
        p, extra=b'junk')), ValueError, ('best.ckpt', 'ExtraData')),
    ('ckpt_zip_bytes', _damaged('latest.ckpt', lambda p: b'PK\x03\x04z'),
     ValueError, ('latest.ckpt',)),
    ('config_json_truncated', _damaged(
        'config.json', lambda p: b'{"model": {"name": '), ValueError,
     ('config.json', 'line 1')),
    ('config_json_not_utf8', _damaged('config.json', lambda p: b'\xff{}'),
     ValueError, ('config.json', 'UnicodeDecodeError')),
    ('metrics_jsonl_middle_garbage', _damaged(
        'metrics.jsonl', lambda p: b'{"epoch": 1}\nxx\n{"epoch": 2}\n'),
     ValueError, ('metrics.jsonl', 'line 2')),
    # Attacks and the evaluator.
    ('attack_eps_string', _attack_call(eps='0.1'), ValueError,
     ('eps', "'0.1'")),
    ('attack_apply_fn_returns_vector', _attack_call(
        apply_fn=lambda v, x: (x @ v)[:, 0]), ValueError, ('[B, K]', '(5,)')),
    ('evaluate_attacks_string', _attack_call(attacks='fgsm'), ValueError,
     ("'fgsm'",)),
    ('cifar_npz_corrupt', _corrupt_cifar, ValueError,
     ('cifar10_subset.npz',)),
    ('search_num_workers_fraction', _search(num_workers=1.5), ValueError,
     ('num_workers', '1.5')),
    ('search_space_other_model', _search(model={
        'name': 'cnn', 'kwargs': {'features': (4,)}}), ValueError,
     ("'mlp'", "'cnn'", 'features')),
    ('workdir_is_a_file', _file_workdir, ValueError,
     ('run_file', 'regular file')),
]


@pytest.mark.parametrize('fn, exc, needles', [r[1:] for r in ROWS],
                         ids=[r[0] for r in ROWS])
def test_bad_input_is_named(tmp_path, fn, exc, needles):
  with pytest.raises(exc) as e:
    fn(str(tmp_path))
  msg = str(e.value)
  for needle in needles:
    assert needle in msg, (needle, msg)


def test_numpy_scalars_are_valid_options():
  m = models.get_model('protonn', 3, num_prototypes=np.int64(4),
                       projection_dim=np.int32(2), input_shape=np.array([5]),
                       gamma=np.float32(0.5))
  assert (m.num_prototypes, m.projection_dim, m.input_shape) == (4, 2, (5,))
  assert isinstance(m.num_prototypes, int)
  m = models.get_model('mlp', 3, hidden=np.array([4, 5]),
                       dropout=np.float64(0.25))
  assert m.hidden == (4, 5) and m.dropout == 0.25
