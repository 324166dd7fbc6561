"""The misuse sweep's harness: a table of bad inputs, each classified.

Each area's cases live in `tests/misuse/test_<area>.py` (attacks, evaluation,
data, models, hardware, io, cli, search, journals, concurrency) as `Case`
rows; pytest runs every row and asserts its classification (`check`);
`python -m tests.misuse.tally [areas]` prints the whole table and its counts:

  clear    a ValueError/TypeError (or the case's own allowed error) whose
           message names the bad value, raised before expensive work; or, for
           a valid input or a recovery case, the documented behaviour
           (accepted, flagged, repaired with nothing lost);
  unclear  another exception, a message that does not name the bad value,
           or a valid input refused;
  silent   no error and a plausible-looking output;
  loss     records lost or a journal left unusable;
  setup    the case's fixture could not be built (an API the sweep expects
           is gone): the case must be updated.

Every case expects `clear` unless its row says otherwise (`Case.expect`).
Cases that drive the TFLite converter with bad calibration data run in a
child process, since the converter can crash the interpreter
(`Case.isolated`; `python -m tests.misuse.sweep <module> <case>`). The
shared fixtures (`Ctx`: a digits MLP, a trained 1-epoch run, ...) are built
once per session (`conftest.py`). Runtime: about 4-5 minutes on a loaded
2-core CPU (seven tiny digits trainings of ~8 s, four launcher subprocesses
of ~10 s, a few TFLite conversions). Counts before the issue-11 fixes (the
issue's own sweep): clear 57 / unclear 30 / silent 16 / loss 4 of 111; after:
clear 151 / silent 1 (the documented `count_batch_axis_undeclared_mlp`) of
152. Issue 23's area `concurrency` (two runs on one workdir, mode mix-ups,
deleted checkpoints, environment failures, clips that exclude the data,
repeated launcher overrides): clear 2 / unclear 8 / silent 7 / loss 5 of 22
before its fixes; every case clear after. Its second pass, area `workdirs`
(host Square / UAP clips, deployed x_train, another architecture under
--mode=profile, --restart with results, deleted config.json / best.ckpt, a
damaged stamp, an attack while a run trains, more mode mix-ups, missing
data): clear 6 / unclear 3 / silent 3 / loss 0 of 12 at 12024de; 12 clear
after. Whole table after (`python -m tests.misuse.tally`, 2026-12-07):
clear 203 / unclear 0 / silent 1 (the documented one) / loss 0 of 204.
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

CATEGORIES = ('clear', 'unclear', 'silent', 'loss')
REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
DIGITS = 'experiments/configs/train/digits_cnn.py'


class SetupError(Exception):
  """The sweep could not build a case's fixture (not the package's fault)."""


def digits_config_module():
  """experiments/configs/train/digits_cnn.py."""
  return pkg('experiments.configs.train.digits_cnn')


def pkg(name: str):
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
    group: area of the package (its cases are in `test_<group>.py`).
    fn: `fn(ctx)`; raises, or returns an output (silent) or a `Verdict`.
    needles: texts the error message must contain (case-insensitive) to
      count as naming the bad value.
    ok: exception types that count as a clear error.
    valid: the input is valid: success is clear, any error unclear.
    late_s: an error raised after this many seconds is not "early".
    isolated: run in a child process (the TFLite converter can segfault on
      bad calibration data); a crash is unclear.
    expect: the classification the case must get (`check`).
  """
  name: str
  group: str
  fn: Callable[['Ctx'], Any]
  needles: tuple[str, ...] = ()
  ok: tuple[type, ...] = (ValueError, TypeError)
  valid: bool = False
  late_s: float | None = None
  isolated: bool = False
  expect: str = 'clear'


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
    data = pkg('tinyrobust.data')
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
    models = pkg('tinyrobust.models')
    model = models.get_model('mlp', 10, hidden=(16,))
    v = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    return model, v, functools.partial(model.apply, train=False)

  @_fixture
  def key(self):
    import jax  # pylint: disable=g-import-not-at-top
    return jax.random.key(0)

  def pgd(self, **kw):
    attacks = pkg('tinyrobust.attacks')
    opts = dict(steps=2, clip=(0.0, 1.0))
    opts.update(kw)
    return attacks.make_pgd(self.mlp()[2], **opts)

  def evaluate(self, apply_fn=None, dataset=None, variables=None, **kw):
    evaluate = pkg('tinyrobust.evaluate')
    opts = dict(attacks=['fgsm'], eps_grid=[0.0, 0.1], batch_size=64, seed=0,
                pgd_steps=2)
    opts.update(kw)
    return evaluate.evaluate_robustness(
        apply_fn or self.mlp()[2],
        self.mlp()[1] if variables is None else variables,
        self.xy() if dataset is None else dataset, **opts)

  def config(self, epochs: int = 1, features=(4, 8)):
    digits_cnn = digits_config_module()
    c = digits_cnn.get_config('quick')
    c.train.epochs = epochs
    c.train.progress_bar = False
    c.model.kwargs.features = tuple(features)
    return c

  def train(self, workdir: str, config=None):
    train = pkg('tinyrobust.train')
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


def _summary(out: Any) -> str:
  if isinstance(out, dict):
    keys = ('clean_accuracy', 'sanity_ok', 'fits', 'num_classes')
    shown = {k: out[k] for k in keys if k in out}
    return json.dumps(shown, default=str) if shown else f'dict({len(out)})'
  return repr(out)[:120]


def _classify_isolated(case: Case) -> tuple[str, str, float]:
  t0 = time.perf_counter()
  r = subprocess.run(
      [sys.executable, '-m', 'tests.misuse.sweep', case.group, case.name],
      cwd=REPO, capture_output=True,
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


def isnan_all(a) -> bool:
  import numpy as np  # pylint: disable=g-import-not-at-top
  return bool(np.all(np.isnan(np.asarray(a))))


def flagged(res: dict[str, Any], what: str) -> Verdict:
  """Clear when an evaluation result carries a flag, silent otherwise."""
  if res.get('sanity_ok') is False or res.get('flags'):
    return Verdict('clear', f'flagged: {json.dumps(res.get("flags"))[:200]}')
  return Verdict('silent', f'{what}: {_summary(res)} with no flag')


def check(case: Case, ctx: Ctx) -> None:
  """Asserts that `case` is classified as it expects (`Case.expect`)."""
  kind, detail, dt = classify(case, ctx)
  assert kind == case.expect, (
      f'{case.group}/{case.name}: {kind} (expected {case.expect}) after '
      f'{dt:.1f} s: {detail}')


def ids(cases: list[Case]) -> list[str]:
  return [c.name for c in cases]


def run_one(group: str, name: str) -> None:
  """Runs one case (child process of an isolated case) and prints it."""
  module = importlib.import_module(f'tests.misuse.test_{group}')
  case, = [c for c in module.CASES if c.name == name]
  root = tempfile.mkdtemp(prefix='misuse_case_')
  try:
    kind, detail, dt = classify(case, Ctx(root), in_child=True)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  print(json.dumps({'result': kind, 'detail': detail, 'seconds': dt}))


if __name__ == '__main__':
  # Through the package's module, so that the cases' `Verdict` is this one.
  importlib.import_module('tests.misuse.sweep').run_one(*sys.argv[1:3])
