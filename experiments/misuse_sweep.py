r"""Misuse sweep (issue 11): bad inputs across the package, each classified.

Command:
  python -m experiments.misuse_sweep [--only=SUBSTR] [--json=out.json] [-v]

Runs a table of careless or hostile inputs against the attacks, the
evaluator, the data loaders, the models, the hardware cost model, the
checkpoint / journal I/O, the run modes (in-process and through
`experiments/main.py` in a subprocess) and the search config, and classifies
each outcome:

  clear    a ValueError/TypeError (or the case's own allowed error) whose
           message names the bad value, raised before expensive work; or, for
           a valid input or a recovery case, the documented behaviour
           (accepted, flagged, repaired with nothing lost);
  unclear  another exception, a message that does not name the bad value,
           or a valid input refused;
  silent   no error and a plausible-looking output;
  loss     records lost or a journal left unusable.

Cases whose fixture could not be built (an API the sweep expects is gone)
are reported as `setup` and not counted. Cases that drive the TFLite
converter with bad calibration data run in a child process, since the
converter can crash the interpreter (`Case.isolated`). Runtime: about 3-4 minutes on a
2-core CPU (seven tiny digits trainings of ~8 s, four launcher subprocesses
of ~10 s, a few TFLite conversions). Counts before the issue-11 fixes (the
issue's own sweep): clear 57 / unclear 30 / silent 16 / loss 4 of 111.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import io as io_lib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

from absl import app
from absl import flags
from absl import logging

_ONLY = flags.DEFINE_string('only', '', 'Run only cases whose name or group '
                            'contains this text.')
_JSON = flags.DEFINE_string('json', '', 'Also write the per-case table here.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Print every case.')
_CASE = flags.DEFINE_string('case', '', 'Internal: run one `group/name` '
                            'case and print its row as JSON (isolated cases '
                            'run this way in a child process).')

CATEGORIES = ('clear', 'unclear', 'silent', 'loss')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class SetupError(Exception):
  """The sweep could not build a case's fixture (not the package's fault)."""


def _digits_config_module():
  """experiments/configs/train/digits_cnn.py (older trees: configs/)."""
  try:
    return importlib.import_module('experiments.configs.train.digits_cnn')
  except ImportError:
    return _pkg('experiments.configs.digits_cnn')


def _pkg(name: str):
  """Imports a package module; a missing one is a `SetupError`."""
  try:
    return importlib.import_module(name)
  except ImportError as err:
    raise SetupError(f'cannot import {name}: {err}') from err


@dataclasses.dataclass
class Verdict:
  """A case's own judgement of a normal return (flags, recoveries, losses)."""
  kind: str
  detail: str


@dataclasses.dataclass
class Case:
  """One bad input.

  Attributes:
    name: short id.
    group: area of the package.
    fn: `fn(ctx)`; raises, or returns an output (silent) or a `Verdict`.
    needles: texts the error message must contain (case-insensitive) to
      count as naming the bad value.
    ok: exception types that count as a clear error.
    valid: the input is valid: success is clear, any error unclear.
    late_s: an error raised after this many seconds is not "early".
    isolated: run in a child process (the TFLite converter can segfault on
      bad calibration data); a crash is unclear.
  """
  name: str
  group: str
  fn: Callable[['Ctx'], Any]
  needles: tuple[str, ...] = ()
  ok: tuple[type, ...] = (ValueError, TypeError)
  valid: bool = False
  late_s: float | None = None
  isolated: bool = False


def _fixture(fn):
  """Caches a fixture; its failures become `SetupError`."""
  name = fn.__name__

  @functools.wraps(fn)
  def wrapper(self):
    if name not in self.cache:
      try:
        self.cache[name] = fn(self)
      except Exception as err:  # pylint: disable=broad-except
        self.cache[name] = SetupError(f'{name}: {type(err).__name__}: {err}')
    out = self.cache[name]
    if isinstance(out, SetupError):
      raise out
    return out

  return wrapper


class Ctx:
  """Lazily built fixtures shared by the cases."""

  def __init__(self, root: str):
    self.root = root
    self.cache: dict[str, Any] = {}
    self.n = 0

  def path(self, name: str) -> str:
    self.n += 1
    return os.path.join(self.root, f'{self.n:03d}_{name}')

  @_fixture
  def digits(self):
    data = _pkg('tinyrobust.data')
    ds = data.load('digits', 'test')
    return ds

  @_fixture
  def xy(self):
    import numpy as np  # pylint: disable=g-import-not-at-top
    ds = self.digits()
    return np.asarray(ds.x[:40], np.float32), np.asarray(ds.y[:40], np.int32)

  @_fixture
  def mlp(self):
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    models = _pkg('tinyrobust.models')
    model = models.get_model('mlp', 10, hidden=(16,))
    v = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    return model, v, functools.partial(model.apply, train=False)

  @_fixture
  def key(self):
    import jax  # pylint: disable=g-import-not-at-top
    return jax.random.key(0)

  def pgd(self, **kw):
    attacks = _pkg('tinyrobust.attacks')
    opts = dict(steps=2, clip=(0.0, 1.0))
    opts.update(kw)
    return attacks.make_pgd(self.mlp()[2], **opts)

  def evaluate(self, apply_fn=None, dataset=None, variables=None, **kw):
    evaluate = _pkg('tinyrobust.evaluate')
    opts = dict(attacks=['fgsm'], eps_grid=[0.0, 0.1], batch_size=64, seed=0,
                pgd_steps=2)
    opts.update(kw)
    return evaluate.evaluate_robustness(
        apply_fn or self.mlp()[2],
        self.mlp()[1] if variables is None else variables,
        self.xy() if dataset is None else dataset, **opts)

  def config(self, epochs: int = 1, features=(4, 8)):
    digits_cnn = _digits_config_module()
    c = digits_cnn.get_config('quick')
    c.train.epochs = epochs
    c.train.progress_bar = False
    c.model.kwargs.features = tuple(features)
    return c

  def train(self, workdir: str, config=None):
    train = _pkg('tinyrobust.train')
    return train.train_and_evaluate(config or self.config(), workdir)

  @_fixture
  def run_dir(self):
    d = self.path('trained_run')
    self.train(d)
    return d

  def attack_config(self, config=None):
    c = config or self.config()
    try:
      c.attack.eps_grid = (0.0, 0.05)
      c.attack.pgd_steps = 2
      c.attack.max_examples = 40
      c.attack.batch_size = 64
    except (AttributeError, KeyError) as err:
      raise SetupError(f'config has no attack section: {err}') from err
    return c


# ----------------------------------------------------------------- helpers --


def _summary(out: Any) -> str:
  if isinstance(out, dict):
    keys = ('clean_accuracy', 'sanity_ok', 'fits', 'num_classes')
    shown = {k: out[k] for k in keys if k in out}
    return json.dumps(shown, default=str) if shown else f'dict({len(out)})'
  return repr(out)[:120]


def _classify_isolated(case: Case) -> tuple[str, str, float]:
  t0 = time.perf_counter()
  r = subprocess.run(
      [sys.executable, '-m', 'experiments.misuse_sweep',
       f'--case={case.group}/{case.name}'], cwd=REPO, capture_output=True,
      text=True, timeout=600, env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'})
  dt = time.perf_counter() - t0
  lines = [l for l in r.stdout.splitlines() if l.startswith('{')]
  if r.returncode != 0 or not lines:
    tail = ' | '.join((r.stderr or '').strip().splitlines()[-2:])[:200]
    return 'unclear', f'process crashed (exit {r.returncode}): {tail}', dt
  row = json.loads(lines[-1])
  return row['result'], row['detail'], dt


def classify(case: Case, ctx: Ctx, *, in_child: bool = False
             ) -> tuple[str, str, float]:
  """(category or 'setup', detail, seconds) of one case."""
  if case.isolated and not in_child:
    return _classify_isolated(case)
  t0 = time.perf_counter()
  try:
    with contextlib.redirect_stdout(io_lib.StringIO()):
      out = case.fn(ctx)
  except SetupError as err:
    return 'setup', str(err), time.perf_counter() - t0
  except AttributeError as err:
    if "module 'tinyrobust" in str(err) or "module 'experiments" in str(err):
      return 'setup', f'API gone: {err}', time.perf_counter() - t0
    return 'unclear', f'AttributeError: {err}'[:300], time.perf_counter() - t0
  except Exception as err:  # pylint: disable=broad-except
    dt = time.perf_counter() - t0
    msg = f'{type(err).__name__}: {err}'.replace('\n', ' ')
    if case.valid:
      return 'unclear', 'valid input refused: ' + msg[:300], dt
    named = all(n.lower() in str(err).lower() for n in case.needles)
    if isinstance(err, case.ok) and named:
      if case.late_s is not None and dt > case.late_s:
        return 'unclear', f'raised late ({dt:.1f} s): {msg[:250]}', dt
      return 'clear', msg[:300], dt
    why = 'message misses ' + repr(case.needles) if not named else 'type'
    return 'unclear', f'{why}: {msg[:300]}', dt
  dt = time.perf_counter() - t0
  if isinstance(out, Verdict):
    return out.kind, out.detail, dt
  if case.valid:
    return 'clear', 'accepted: ' + _summary(out), dt
  return 'silent', 'no error: ' + _summary(out), dt


def _isnan_all(a) -> bool:
  import numpy as np  # pylint: disable=g-import-not-at-top
  return bool(np.all(np.isnan(np.asarray(a))))


def _flagged(res: dict[str, Any], what: str) -> Verdict:
  """Clear when an evaluation result carries a flag, silent otherwise."""
  if res.get('sanity_ok') is False or res.get('flags'):
    return Verdict('clear', f'flagged: {json.dumps(res.get("flags"))[:200]}')
  return Verdict('silent', f'{what}: {_summary(res)} with no flag')


# ----------------------------------------------------------------- attacks --


def _attack_call(ctx: Ctx, *, x=None, y=None, key=None, eps=0.1, **kw):
  xx, yy = ctx.xy()
  atk = ctx.pgd(**kw)
  return atk(ctx.mlp()[1], xx if x is None else x, yy if y is None else y,
             ctx.key() if key is None else key, eps)


def _with_nan_x(ctx):
  x = ctx.xy()[0].copy()
  x[3, 0, 0, 0] = float('nan')
  return _attack_call(ctx, x=x)


def _traced(ctx, *, eps, y=None) -> Verdict:
  """Under jax.jit + vmap a bad eps/label must not be a silent no-op."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  xx, yy = ctx.xy()
  atk = ctx.pgd()
  sweep = jax.jit(jax.vmap(atk, in_axes=(None, None, None, None, 0)))
  out = sweep(ctx.mlp()[1], xx, yy if y is None else y, ctx.key(),
              jnp.asarray([eps], jnp.float32))
  if _isnan_all(out[0] if y is None else out[0][y >= 10]):
    return Verdict('clear', 'x_adv is NaN (shows up as non-finite)')
  return Verdict('silent', 'attack ran as a no-op under jit')


def _traced_label(ctx):
  y = ctx.xy()[1].copy()
  y[:5] = 12
  return _traced(ctx, eps=0.1, y=y)


def _vector_apply(ctx):
  attacks = _pkg('tinyrobust.attacks')
  apply = ctx.mlp()[2]
  atk = attacks.make_pgd(lambda v, x: apply(v, x)[:, 0], steps=1)
  xx, yy = ctx.xy()
  return atk(ctx.mlp()[1], xx, yy, ctx.key(), 0.1)


def _get_attack(name, **kw):
  def fn(ctx):
    attacks = _pkg('tinyrobust.attacks')
    return attacks.get_attack(name, ctx.mlp()[2], **kw)
  return fn


def _attack_cases() -> list[Case]:
  g = 'attacks'
  import numpy as np  # pylint: disable=g-import-not-at-top
  return [
      Case('key_int', g, lambda c: _attack_call(c, key=0), ('key',)),
      Case('key_uint_vector', g, lambda c: _attack_call(
          c, key=np.array([1, 2, 3], np.uint32)), ('key',)),
      Case('eps_string', g, lambda c: _attack_call(c, eps='0.1'), ("'0.1'",)),
      Case('eps_negative', g, lambda c: _attack_call(c, eps=-0.1), ('-0.1',)),
      Case('eps_nan', g, lambda c: _attack_call(c, eps=float('nan')),
           ('nan',)),
      Case('eps_inf', g, lambda c: _attack_call(c, eps=float('inf')),
           ('inf',)),
      Case('eps_wrong_length', g, lambda c: _attack_call(
          c, eps=np.full(7, 0.1, np.float32)), ('(7,)',)),
      Case('label_out_of_range', g, lambda c: _attack_call(
          c, y=np.full(40, 10, np.int32)), ('10',)),
      Case('label_negative', g, lambda c: _attack_call(
          c, y=np.full(40, -1, np.int32)), ('-1',)),
      Case('label_float', g, lambda c: _attack_call(
          c, y=np.zeros(40, np.float32)), ('float',)),
      Case('x_nan', g, _with_nan_x, ('nan',)),
      Case('x_y_batch_mismatch', g, lambda c: _attack_call(
          c, y=np.zeros(39, np.int32)), ('39',)),
      Case('apply_fn_returns_vector', g, _vector_apply, ('[B, K]',)),
      Case('apply_fn_not_callable', g, lambda c: _pkg(
          'tinyrobust.attacks').make_pgd(3), ('apply_fn',)),
      Case('steps_zero', g, lambda c: c.pgd(steps=0), ('steps',)),
      Case('steps_fraction', g, lambda c: c.pgd(steps=2.5), ('2.5',)),
      Case('norm_unknown', g, lambda c: c.pgd(norm='l3'), ("'l3'",)),
      Case('loss_unknown', g, lambda c: c.pgd(loss='hinge'), ("'hinge'",)),
      Case('step_size_negative', g, lambda c: c.pgd(step_size=-1.0),
           ('-1',)),
      Case('restarts_zero', g, lambda c: c.pgd(restarts=0), ('restarts',)),
      Case('clip_reversed', g, lambda c: c.pgd(clip=(1.0, 0.0)), ('clip',)),
      Case('targeted_string', g, lambda c: c.pgd(targeted='yes'),
           ("'yes'",)),
      Case('attack_unknown_name', g, _get_attack('cw'), ("'cw'",)),
      Case('attack_unknown_option', g, _get_attack('pgd', stepz=3),
           ('stepz',)),
      Case('jit_eps_negative', g, lambda c: _traced(c, eps=-0.1)),
      Case('jit_eps_nan', g, lambda c: _traced(c, eps=float('nan'))),
      Case('jit_label_out_of_range', g, _traced_label),
  ]


# --------------------------------------------------------------- evaluator --


def _nan_logits(ctx):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  apply = ctx.mlp()[2]
  res = ctx.evaluate(lambda v, x: apply(v, x) * jnp.nan)
  return _flagged(res, 'NaN logits')


def _three_outputs(ctx):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  models = _pkg('tinyrobust.models')
  m = models.get_model('mlp', 3, hidden=(8,))
  v = m.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  ds = ctx.digits()
  sub = dataclasses.replace(ds, x=ds.x[:40], y=ds.y[:40]) if \
      dataclasses.is_dataclass(ds) else ds
  res = ctx.evaluate(functools.partial(m.apply, train=False), sub,
                     variables=v)
  return _flagged(res, '3-output model on 10 classes')


def _labels_beyond_dataset(ctx):
  import numpy as np  # pylint: disable=g-import-not-at-top
  x, y = ctx.xy()
  return ctx.evaluate(dataset=(x, np.full_like(y, 12)))


def _nan_input(ctx):
  x, y = ctx.xy()
  x = x.copy()
  x[0, 0, 0, 0] = float('inf')
  return ctx.evaluate(dataset=(x, y))


def _evaluator_cases() -> list[Case]:
  g = 'evaluator'
  import numpy as np  # pylint: disable=g-import-not-at-top
  x40 = lambda c: c.xy()[0]
  return [
      Case('attacks_string', g, lambda c: c.evaluate(attacks='fgsm'),
           ("'fgsm'",)),
      Case('attacks_unknown', g, lambda c: c.evaluate(attacks=['cw']),
           ("'cw'",)),
      Case('attacks_dict_not_callable', g, lambda c: c.evaluate(
          attacks={'mine': 3}), ('mine',)),
      Case('eps_grid_strings', g, lambda c: c.evaluate(eps_grid=['0', 'a']),
           ("'a'",)),
      Case('eps_grid_empty', g, lambda c: c.evaluate(eps_grid=[]),
           ('eps_grid',)),
      Case('eps_grid_negative', g, lambda c: c.evaluate(eps_grid=[0.0, -0.1]),
           ('-0.1',)),
      Case('eps_grid_nan', g, lambda c: c.evaluate(eps_grid=[float('nan')]),
           ('nan',)),
      Case('batch_size_zero', g, lambda c: c.evaluate(batch_size=0),
           ('batch_size',)),
      Case('batch_size_fraction', g, lambda c: c.evaluate(batch_size=2.5),
           ('2.5',)),
      Case('seed_string', g, lambda c: c.evaluate(seed='x'), ("'x'",)),
      Case('max_examples_negative', g, lambda c: c.evaluate(max_examples=-5),
           ('-5',)),
      Case('labels_beyond_classes', g, _labels_beyond_dataset, ('12',)),
      Case('x_y_length_mismatch', g, lambda c: c.evaluate(
          dataset=(x40(c), c.xy()[1][:30])), ('30',)),
      Case('input_inf', g, _nan_input, ('inf',)),
      Case('empty_dataset', g, lambda c: c.evaluate(
          dataset=(x40(c)[:0], c.xy()[1][:0])), ('empty',)),
      Case('clip_string', g, lambda c: c.evaluate(clip='bad'), ("'bad'",)),
      Case('norm_unknown', g, lambda c: c.evaluate(norm='l1'), ("'l1'",)),
      Case('apply_fn_vector', g, lambda c: c.evaluate(
          lambda v, x: c.mlp()[2](v, x)[:, 0]), ('[B, K]',)),
      Case('dataset_not_pair', g, lambda c: c.evaluate(
          dataset=np.zeros((4, 8, 8, 1))), ('dataset',)),
      Case('nan_logits', g, _nan_logits),
      Case('three_output_model_10_class_data', g, _three_outputs, ('3',)),
  ]


# ----------------------------------------------------------------- loaders --


def _load(name, split='test', **kw):
  def fn(ctx):
    del ctx
    data = _pkg('tinyrobust.data')
    return data.load(name, split, **kw)
  return fn


def _corrupt_npz(ctx):
  data = _pkg('tinyrobust.data')
  d = ctx.path('bad_data')
  os.makedirs(d)
  with open(os.path.join(d, 'cifar10_subset.npz'), 'wb') as f:
    f.write(b'PK\x03\x04 truncated download')
  return data.load('cifar10', 'test', source='local', data_dir=d)


def _loader_cases() -> list[Case]:
  g = 'loaders'
  missing = (ValueError, TypeError, FileNotFoundError)
  return [
      Case('dataset_unknown', g, _load('mnist2'), ("'mnist2'",)),
      Case('split_typo', g, _load('digits', 'tes'), ("'tes'",)),
      Case('seed_negative', g, _load('digits', seed=-1), ('-1',)),
      Case('seed_fraction', g, _load('digits', seed=1.5), ('1.5',)),
      Case('option_unknown', g, _load('digits', sed=1), ('sed',)),
      Case('cifar_source_typo', g, _load('cifar10', source='tfsd'),
           ("'tfsd'",)),
      Case('cifar_local_missing', g, _load(
          'cifar10', source='local', data_dir='/nonexistent/dir'),
           ('cifar10_subset.npz',), ok=missing),
      Case('cifar_val_fraction', g, _load('cifar10', val_fraction=1.5),
           ('1.5',)),
      Case('cifar_corrupt_npz', g, _corrupt_npz, ('cifar10_subset.npz',)),
      Case('speech_features_typo', g, _load(
          'speech_commands', features='mfccs'), ("'mfccs'",), ok=missing),
      Case('auritus_split_by_typo', g, _load('auritus', split_by='persons'),
           ("'persons'",), ok=missing),
  ]


# ------------------------------------------------------------------ models --


def _model(name, *args, **kw):
  def fn(ctx):
    del ctx
    models = _pkg('tinyrobust.models')
    return models.get_model(name, *args, **kw)
  return fn


def _np_int_classes(ctx):
  import numpy as np  # pylint: disable=g-import-not-at-top
  return _model('cnn', np.int64(10))(ctx)


def _variables_other_shape(model_name, built, other, **kw):
  def fn(ctx):
    del ctx
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    models = _pkg('tinyrobust.models')
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


# ---------------------------------------------------------------- hardware --

_BOARD = {'name': 'b', 'sram': 65536, 'flash': 262144, 'clock_hz': 1e8}


def _profile_dict(sram=1000, flash=5000, macs=1e6):
  sec = {'flash': flash, 'sram_liveness': sram}
  return {'macs': macs, 'float32': dict(sec), 'int8': dict(sec)}


def _fits(profile=None, **board):
  def fn(ctx):
    del ctx
    hardware = _pkg('tinyrobust.hardware')
    return hardware.fits(profile or _profile_dict(), {**_BOARD, **board})
  return fn


@functools.lru_cache(maxsize=None)
def _protonn5():
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  models = _pkg('tinyrobust.models')
  m = models.get_model('protonn', 3, num_prototypes=4, input_shape=(5,))
  return m, m.init(jax.random.key(0), jnp.zeros((1, 5)))


def _count(shape):
  def fn(ctx):
    del ctx
    hardware = _pkg('tinyrobust.hardware')
    return hardware.count(*_protonn5(), shape)
  return fn


def _count_mlp_batch_axis(ctx):
  """An MLP that declares no input shape: only a warning is possible."""
  hardware = _pkg('tinyrobust.hardware')
  model, v, _ = ctx.mlp()
  out = hardware.count(model, v, (1, 8, 8, 1))
  return Verdict('silent', f'counted {out["macs"]} MACs for shape (1, 8, 8, '
                 '1) (undeclared model: a warning at most)')


def _export(module_kind: str, rep_bad=None):
  def fn(ctx):
    del ctx
    import flax.linen as nn  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    export = _pkg('tinyrobust.hardware.export')

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
  hardware = _pkg('tinyrobust.hardware')
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
      Case('board_unknown_name', g, lambda c: _pkg(
          'tinyrobust.hardware').get_board('esp32'),
           ("'esp32'",)),
      Case('profile_negative_sram', g, _fits(_profile_dict(sram=-10)),
           ('sram_liveness', '-10')),
      Case('profile_nan_flash', g, _fits(_profile_dict(flash=nan)),
           ('flash', 'nan')),
      Case('profile_negative_macs', g, _fits(_profile_dict(macs=-5)),
           ('macs', '-5')),
      Case('fits_precision_int4', g, lambda c: _pkg(
          'tinyrobust.hardware').fits(
              _profile_dict(), _BOARD, precision='int4'), ("'int4'",)),
      Case('count_batch_axis_declared', g, _count((1, 5)), ('(1, 5)', '(5,)')),
      Case('count_batch_axis_undeclared_mlp', g, _count_mlp_batch_axis),
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


# --------------------------------------------------------------------- io --


def _damaged(name: str, data: bytes, loader: str):
  def fn(ctx):
    io = _pkg('tinyrobust.io')
    d = ctx.path('io')
    os.makedirs(d)
    p = os.path.join(d, name)
    if loader == 'ckpt':
      io.save_pytree(p, {'a': [1.0, 2.0], 'epoch': 3})
      with open(p, 'rb') as f:
        good = f.read()
      data2 = {'truncate': good[:len(good) // 2], 'extra': good + b'xx'}.get(
          data.decode(), data)
    else:
      data2 = data
    with open(p, 'wb') as f:
      f.write(data2)
    return getattr(io, {'ckpt': 'load_pytree', 'json': 'read_json',
                        'jsonl': 'read_jsonl', 'npz': 'load_npz'}[loader])(p)
  return fn


def _workdir_is_file(ctx):
  p = ctx.path('a_file')
  with open(p, 'w') as f:
    f.write('x')
  io = _pkg('tinyrobust.io')
  return io.check_writable_dir(p)


def _io_cases() -> list[Case]:
  g = 'io'
  return [
      Case('ckpt_truncated', g, _damaged('latest.ckpt', b'truncate', 'ckpt'),
           ('latest.ckpt',)),
      Case('ckpt_extra_data', g, _damaged('latest.ckpt', b'extra', 'ckpt'),
           ('latest.ckpt',)),
      Case('ckpt_zip_garbage', g, _damaged('best.ckpt', b'PK\x03\x04xx',
                                           'ckpt'), ('best.ckpt',)),
      Case('ckpt_empty', g, _damaged('best.ckpt', b'', 'ckpt'),
           ('best.ckpt',)),
      Case('config_json_truncated', g, _damaged(
          'config.json', b'{"model": {"name": "cnn"', 'json'),
           ('config.json',)),
      Case('config_json_binary', g, _damaged('config.json', b'\xff\xfe\x00{',
                                             'json'), ('config.json',)),
      Case('metrics_middle_garbage', g, _damaged(
          'metrics.jsonl', b'{"epoch": 1}\ngarbage\n{"epoch": 2}\n', 'jsonl'),
           ('metrics.jsonl', 'line 2')),
      Case('npz_truncated', g, _damaged('data.npz', b'PK\x03\x04abc', 'npz'),
           ('data.npz',)),
      Case('workdir_is_file', g, _workdir_is_file, ('a_file',)),
  ]


# ---------------------------------------------------------------- launcher --


def _mode(mode: str, make_config=None, workdir=None):
  def fn(ctx):
    modes = _pkg('tinyrobust.modes')
    cfg = make_config(ctx) if make_config else None
    return modes.run(mode, cfg, workdir(ctx) if workdir else ctx.run_dir())
  return fn


def _seed1(ctx):
  c = ctx.attack_config()
  c.data.options.seed = 1
  return c


def _wider(ctx):
  c = ctx.config(features=(8, 16))
  c.hardware = {'measure': False}
  return c


def _copy_run(ctx, name: str) -> str:
  d = ctx.path(name)
  shutil.copytree(ctx.run_dir(), d)
  return d


def _attack_unfinished(ctx):
  modes = _pkg('tinyrobust.modes')
  d = _copy_run(ctx, 'unfinished')
  os.remove(os.path.join(d, 'final_metrics.json'))
  res = modes.run('attack', ctx.attack_config(), d)
  if (res.get('run') or {}).get('training_finished') is False:
    return Verdict('clear', 'results say training_finished=False')
  return Verdict('silent', 'unfinished run attacked without a note')


def _file_workdir(ctx):
  p = ctx.path('workdir_file')
  with open(p, 'w') as f:
    f.write('not a folder')
  return p


def _bad_train_config(edit, needle: str, *, fix_and_rerun: bool = False):
  """The error must come before the workdir is touched (or be replaceable)."""
  def fn(ctx):
    d = ctx.path('bad_config')
    c = ctx.config()
    edit(c)
    try:
      ctx.train(d, c)
    except (ValueError, TypeError) as err:
      msg = str(err)
    except Exception as err:  # pylint: disable=broad-except
      return Verdict('unclear', f'{type(err).__name__}: {err}'[:300])
    else:
      return Verdict('silent', 'bad config trained')
    if needle.lower() not in msg.lower():
      return Verdict('unclear', f'message misses {needle!r}: {msg[:250]}')
    wrote = os.path.exists(os.path.join(d, 'config.json'))
    if fix_and_rerun:
      try:
        ctx.train(d, ctx.config())
      except Exception as err:  # pylint: disable=broad-except
        return Verdict('unclear', f'corrected command refused: {err}'[:300])
      return Verdict('clear', f'{msg[:150]}; corrected run accepted')
    if wrote:
      return Verdict('unclear', f'config.json written before failing: '
                     f'{msg[:200]}')
    return Verdict('clear', msg[:300])
  return fn


def _set(path: str, value):
  def edit(c):
    *parents, leaf = path.split('.')
    node = c
    for p in parents:
      node = node[p]
    with node.ignore_type():
      node[leaf] = value
  return edit


def _resume_changed(path: str, value):
  def fn(ctx):
    d = _copy_run(ctx, 'resume_changed')
    c = ctx.config()
    _set(path, value)(c)
    return ctx.train(d, c)
  return fn


def _other_architecture_ckpt(ctx):
  d = ctx.path('other_arch')
  os.makedirs(d)
  for name in ('latest.ckpt', 'best.ckpt'):
    shutil.copy(os.path.join(ctx.run_dir(), name), d)
  return ctx.train(d, ctx.config(features=(8, 16)))


def _main(args: list[str], needles: tuple[str, ...] = (), *,
          valid: bool = False):
  def fn(ctx):
    del ctx
    env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3', 'JAX_PLATFORMS': 'cpu'}
    r = subprocess.run([sys.executable, '-m', 'experiments.main', *args],
                       cwd=REPO, capture_output=True, text=True, timeout=600,
                       env=env)
    text = (r.stderr + r.stdout)
    tail = ' | '.join(text.strip().splitlines()[-2:])[:300]
    if r.returncode == 0:
      return Verdict('clear' if valid else 'silent', f'exit 0: {tail}')
    if valid:
      return Verdict('unclear', f'valid command failed: {tail}')
    if all(n.lower() in text.lower() for n in needles):
      return Verdict('clear', f'exit {r.returncode}: {tail}')
    return Verdict('unclear', f'exit {r.returncode}, misses {needles}: {tail}')
  return fn


_DIGITS = ('experiments/configs/train/digits_cnn.py'
           if os.path.exists(os.path.join(
               REPO, 'experiments/configs/train/digits_cnn.py'))
           else 'experiments/configs/digits_cnn.py')


def _launcher_cases() -> list[Case]:
  g = 'launcher'
  attack_overrides = [
      '--config.model.kwargs.features=(4,8)', '--config.train.epochs=1',
      '--config.train.progress_bar=False',
      '--config.attack.eps_grid=(0.0,0.05)', '--config.attack.pgd_steps=2',
      '--config.attack.max_examples=40']
  return [
      Case('attack_config_differs_from_run', g, _mode('attack', _seed1),
           ('data.options.seed',)),
      Case('profile_config_differs_from_run', g, _mode('profile', _wider),
           ('model.kwargs.features',)),
      Case('attack_unfinished_run', g, _attack_unfinished),
      Case('attack_workdir_is_file', g, _mode(
          'attack', lambda c: c.attack_config(), _file_workdir),
           ('workdir_file',)),
      Case('train_workdir_is_file', g, _mode(
          'train', lambda c: c.config(), _file_workdir), ('workdir_file',),
           late_s=5.0),
      Case('attack_no_run', g, _mode(
          'attack', None, lambda c: c.path('empty_run')), ('config.json',)),
      Case('train_bad_optimizer_then_fixed', g, _bad_train_config(
          _set('train.optimizer', 'adamx'), 'adamx', fix_and_rerun=True)),
      Case('train_bad_model_kwargs', g, _bad_train_config(
          _set('model.kwargs.features', (0, 8)), 'features')),
      Case('train_bad_augment', g, _bad_train_config(
          _set('data.augment', 'flipz'), 'flipz')),
      Case('train_bad_data_option', g, _bad_train_config(
          _set('data.options.seed', -3), '-3')),
      Case('train_lr_string', g, _bad_train_config(
          _set('train.learning_rate', '3e-3'), '3e-3')),
      Case('train_epochs_zero', g, _bad_train_config(
          _set('train.epochs', 0), 'epochs')),
      Case('resume_cosmetic_progress_bar', g, _resume_changed(
          'train.progress_bar', True), valid=True),
      Case('resume_cosmetic_eval_batch_size', g, _resume_changed(
          'train.eval_batch_size', 64), valid=True),
      Case('resume_changed_learning_rate', g, _resume_changed(
          'train.learning_rate', 1e-2), ('learning_rate',)),
      Case('checkpoint_other_architecture', g, _other_architecture_ckpt,
           ('latest.ckpt',)),
      Case('main_attack_overrides', g, lambda c: _main(
          [f'--config={_DIGITS}:quick', *attack_overrides, '--mode=attack',
           f'--workdir={c.run_dir()}'], valid=True)(c)),
      Case('main_mode_typo', g, _main(
          [f'--config={_DIGITS}', '--mode=attak', '--workdir=/tmp/x'],
          ('attak',))),
      Case('main_variant_typo', g, _main(
          [f'--config={_DIGITS}:quik', '--workdir=/tmp/x'], ('quik',))),
      Case('main_no_workdir', g, _main([f'--config={_DIGITS}'],
                                       ('workdir',))),
  ]


# ------------------------------------------------------------------ search --

_ERROR_ONLY = {'error': 1.0, 'flash': 0.0, 'sram': 0.0, 'latency': 0.0,
               'adversarial': 0.0}


def _bowl_space():
  from skopt import space as sk  # pylint: disable=g-import-not-at-top
  spaces = _pkg('tinyrobust.nas.spaces')
  return spaces.SearchSpace('bowl', 'none', (sk.Real(-5.0, 5.0, name='x0'),
                                             sk.Integer(0, 20, name='k')))


def _bowl(params, trial):
  """An analytic candidate (no training): error = (x0 - 1)^2 + k / 20."""
  del trial
  objective = _pkg('tinyrobust.nas.objective')
  terms = objective.terms(val_accuracy=None, flash_bytes=1000.0,
                          sram_bytes=1000.0, flops=0.0, fgsm_consistency=None,
                          flash_max=1e9, sram_max=1e9)
  terms['error'] = (float(params['x0']) - 1.0) ** 2 + int(params['k']) / 20
  terms['adversarial_error'] = 0.0
  return {'status': 'ok', 'terms': terms, 'metrics': {'value': terms['error']}}


def _search_config(ctx, **search):
  import ml_collections  # pylint: disable=g-import-not-at-top
  c = ctx.config()
  if not search.pop('cnn_kwargs', False):
    c.model = ml_collections.ConfigDict({'name': 'mlp', 'kwargs': {}})
  c.search = ml_collections.ConfigDict({
      'space': 'mlp', 'num_trials': 1, 'trial_epochs': 1, 'board': '',
      'flash_max_bytes': 1e6, 'sram_max_bytes': 1e6})
  try:
    c.attack.eps_grid = (0.05,)  # a search attacks at one eps
    c.attack.max_examples = 40
  except (AttributeError, KeyError) as err:
    raise SetupError(f'config has no attack section: {err}') from err
  with c.ignore_type():
    for k, v in search.items():
      if k.startswith('attack.'):
        c.attack[k.split('.', 1)[1]] = v
      else:
        c.search[k] = v
  return c


def _bad_search(**search):
  def fn(ctx):
    nas = _pkg('tinyrobust.nas')
    d = ctx.path('search')
    try:
      return nas.run_search(_search_config(ctx, **search), d)
    except Exception:
      if os.path.exists(d) and os.listdir(d):
        raise RuntimeError(f'workdir written before failing: '
                           f'{os.listdir(d)}') from None
      raise
  return fn


def _search_cases() -> list[Case]:
  g = 'search'
  return [
      Case('num_trials_zero', g, _bad_search(num_trials=0), ('num_trials',)),
      Case('designer_typo', g, _bad_search(designer='gpx'), ("'gpx'",)),
      Case('executor_typo', g, _bad_search(executor='threads'),
           ("'threads'",)),
      Case('adversarial_attack_missing', g, _bad_search(
          adversarial_attack='pgdd'), ("'pgdd'",)),
      Case('search_eps_grid_two_values', g, _bad_search(
          **{'attack.eps_grid': (0.0, 0.1)}), ('eps_grid',)),
      Case('weight_nan', g, _bad_search(weights={'error': float('nan')}),
           ('nan',)),
      Case('board_typo', g, _bad_search(
          board='esp32', flash_max_bytes=None, sram_max_bytes=None),
           ("'esp32'",)),
      Case('space_does_not_match_model_kwargs', g, _bad_search(
          cnn_kwargs=True), ('features',)),
      Case('sram_gate_typo', g, _bad_search(sram_gate='tflmm'),
           ("'tflmm'",)),
      Case('space_unknown', g, _bad_search(space='resnet99'),
           ("'resnet99'",)),
      Case('weight_spread_negative', g, _bad_search(weight_spread=-0.5),
           ('-0.5',)),
      Case('batch_size_zero', g, _bad_search(batch_size=0), ('batch_size',)),
      Case('num_workers_fraction', g, _bad_search(num_workers=1.5),
           ('1.5',)),
  ]


# -------------------------------------------------------------------- loss --


def _torn_trials(ctx) -> Verdict:
  """Cut the journal's last line to 40 characters, then resume twice."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  nas = _pkg('tinyrobust.nas')
  journal_lib = _pkg('tinyrobust.nas.journal')
  d = ctx.path('torn_search')
  c = ml_collections.ConfigDict({
      'seed': 0, 'data': {'name': 'synthetic', 'options': {}},
      'model': {'name': 'bowl', 'kwargs': {}}, 'train': {'epochs': 1},
      'search': {'weights': dict(_ERROR_ONLY), 'weight_spread': 0.0,
                 'n_initial_points': 3, 'n_acq_points': 200,
                 'num_trials': 4, 'batch_size': 1, 'board': ''}})
  space = _bowl_space()
  nas.run_search(c, d, evaluate_fn=_bowl, space=space)
  path = os.path.join(d, journal_lib.FILENAME)
  with open(path) as f:
    lines = f.read().splitlines()
  with open(path, 'w') as f:
    f.write('\n'.join(lines[:-1] + [lines[-1][:40]]))
  try:
    for n in (6, 8):
      c.search.num_trials = n
      nas.run_search(c, d, evaluate_fn=_bowl, space=space)
    with open(path) as f:
      for i, line in enumerate(f.read().splitlines()):
        json.loads(line)
    results = journal_lib.Journal(d).replay().results
  except Exception as err:  # pylint: disable=broad-except
    return Verdict('loss', f'journal unusable: {type(err).__name__}: {err}'
                   [:300])
  if sorted(r['trial'] for r in results) != list(range(8)):
    return Verdict('loss', f'trials {[r["trial"] for r in results]}')
  torn = os.path.exists(path + '.torn')
  return Verdict('clear', 'resumed twice, valid JSONL'
                 + ('; fragment kept in .torn' if torn else ''))


@functools.lru_cache(maxsize=None)
def _two_epoch_run(root: str) -> str:
  """A finished 2-epoch digits run to copy (trained once per sweep)."""
  train = _pkg('tinyrobust.train')
  digits_cnn = _digits_config_module()
  c = digits_cnn.get_config('quick')
  c.train.epochs = 2
  c.train.progress_bar = False
  c.model.kwargs.features = (4, 8)
  d = os.path.join(root, 'two_epoch_run')
  train.train_and_evaluate(c, d)
  return d


def _metrics_lines(d: str) -> list[str]:
  with open(os.path.join(d, 'metrics.jsonl')) as f:
    return f.read().splitlines()


def _write_lines(d: str, lines: list[str], tail: str = '\n') -> None:
  with open(os.path.join(d, 'metrics.jsonl'), 'w') as f:
    f.write('\n'.join(lines) + tail)


def _restart_and_check(ctx, damage: Callable[[str, list[str]], None]
                       ) -> Verdict:
  """Copies the 2-epoch run, damages it as a kill would, restarts it."""
  d = ctx.path('killed_run')
  shutil.copytree(_two_epoch_run(ctx.root), d)
  lines = _metrics_lines(d)
  body = [l for l in lines if '"final"' not in l]
  os.remove(os.path.join(d, 'final_metrics.json'))
  damage(d, body)
  c = ctx.config(epochs=2)
  try:
    ctx.train(d, c)
  except (ValueError, TypeError) as err:
    if 'metrics.jsonl' in str(err) and 'line' in str(err):
      return Verdict('clear', f'refused, naming the line: {err}'[:300])
    return Verdict('unclear', f'{type(err).__name__}: {err}'[:300])
  try:
    records = [json.loads(l) for l in _metrics_lines(d) if l.strip()]
  except json.JSONDecodeError as err:
    return Verdict('loss', f'metrics.jsonl left invalid: {err}')
  epochs = [r.get('epoch') for r in records if not r.get('final')]
  finals = sum(1 for r in records if r.get('final'))
  if sorted(e for e in epochs if e is not None) != [1, 2] or finals != 1:
    return Verdict('loss', f'epoch records {epochs}, final records {finals}')
  return Verdict('clear', 'every epoch record once, one final record')


def _kill_after_ckpt(d, body):
  _write_lines(d, body[:-1])  # epoch 2's line never written


def _torn_metrics(d, body):
  _write_lines(d, body[:-1] + [body[-1][:40]], tail='')


def _garbage_metrics(d, body):
  _write_lines(d, body[:1] + ['this is not json'] + body[1:])


def _finished_rerun(ctx) -> Verdict:
  d = ctx.path('rerun')
  shutil.copytree(_two_epoch_run(ctx.root), d)
  ctx.train(d, ctx.config(epochs=2))
  finals = sum(1 for l in _metrics_lines(d) if '"final"' in l)
  if finals != 1:
    return Verdict('silent', f'{finals} final records after a re-run')
  return Verdict('clear', 're-run appended nothing')


def _loss_cases() -> list[Case]:
  g = 'loss'
  return [
      Case('torn_trials_resume_twice', g, _torn_trials),
      Case('kill_between_checkpoint_and_metrics', g,
           lambda c: _restart_and_check(c, _kill_after_ckpt)),
      Case('torn_metrics_then_restart', g,
           lambda c: _restart_and_check(c, _torn_metrics)),
      Case('garbage_in_metrics_then_restart', g,
           lambda c: _restart_and_check(c, _garbage_metrics)),
      Case('finished_run_rerun', g, _finished_rerun),
  ]


# -------------------------------------------------------------------- main --


def all_cases() -> list[Case]:
  return (_attack_cases() + _evaluator_cases() + _loader_cases() +
          _model_cases() + _hardware_cases() + _io_cases() +
          _launcher_cases() + _search_cases() + _loss_cases())


def run(cases: list[Case], root: str, verbose: bool = False
        ) -> list[dict[str, Any]]:
  ctx = Ctx(root)
  rows = []
  for case in cases:
    kind, detail, dt = classify(case, ctx)
    rows.append({'group': case.group, 'case': case.name, 'result': kind,
                 'seconds': round(dt, 2), 'detail': detail})
    if verbose or kind != 'clear':
      print(f'{kind:8s} {case.group:9s} {case.name:38s} {dt:6.1f}s  '
            f'{detail[:160]}', flush=True)
  return rows


def counts(rows: list[dict[str, Any]]) -> dict[str, int]:
  out = {k: 0 for k in CATEGORIES + ('setup',)}
  for r in rows:
    out[r['result']] += 1
  return out


def _run_one(spec: str) -> None:
  """Runs one case (child process of an isolated case) and prints it."""
  group, name = spec.split('/', 1)
  case, = [c for c in all_cases() if c.group == group and c.name == name]
  root = tempfile.mkdtemp(prefix='misuse_case_')
  try:
    kind, detail, dt = classify(case, Ctx(root), in_child=True)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  print(json.dumps({'result': kind, 'detail': detail, 'seconds': dt}))


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  if _CASE.value:
    _run_one(_CASE.value)
    return
  cases = [c for c in all_cases()
           if not _ONLY.value or _ONLY.value in c.name or
           _ONLY.value in c.group]
  root = tempfile.mkdtemp(prefix='misuse_sweep_')
  t0 = time.time()
  try:
    rows = run(cases, root, _VERBOSE.value)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  n = counts(rows)
  by_group: dict[str, dict[str, int]] = {}
  for r in rows:
    by_group.setdefault(r['group'], {k: 0 for k in CATEGORIES + ('setup',)})
    by_group[r['group']][r['result']] += 1
  print('\ngroup      ' + ' '.join(f'{k:>8s}' for k in CATEGORIES + ('setup',)))
  for grp, c in by_group.items():
    print(f'{grp:10s} ' + ' '.join(f'{c[k]:8d}' for k in CATEGORIES +
                                   ('setup',)))
  print(f'\n{len(rows)} cases in {time.time() - t0:.0f} s: ' + ', '.join(
      f'{k} {n[k]}' for k in CATEGORIES + ('setup',)))
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump({'counts': n, 'rows': rows}, f, indent=1)


if __name__ == '__main__':
  app.run(main)
