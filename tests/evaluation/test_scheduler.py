"""The host-side scheduler: agreement with the masked evaluator, compaction,
nested-eps reuse, the raw-outcome audit and resumable state."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

from tinyrobust import attacks
from tinyrobust import evaluate
from tinyrobust.attacks import registry
from tinyrobust.evaluation import scheduler
from tinyrobust.evaluation import scheduler_state

GRID = (0.0, 0.02, 0.05, 0.1)


def _linear(v, x):
  return x @ v['w'] + v['b']


@functools.lru_cache(maxsize=1)
def _digits():
  d = load_digits()
  x = (d.data[:600] / 16).astype(np.float32)
  y = d.target[:600].astype(np.int32)
  w = np.linalg.lstsq(np.c_[x, np.ones(len(x))], np.eye(10)[y],
                      rcond=None)[0].astype(np.float32) * 5
  return x, y, {'w': jnp.asarray(w[:-1]), 'b': jnp.asarray(w[-1])}


def _kernels():
  return {'fgsm': attacks.get_attack('fgsm', _linear, clip=(0.0, 1.0)),
          'pgd': attacks.get_attack('pgd', _linear, clip=(0.0, 1.0), steps=5,
                                    random_start=False)}


def test_bucket_sizes_are_full_steps_then_step_over_a_power_of_growth():
  assert scheduler.bucket_sizes(600, 256) == [256, 256, 128]
  assert scheduler.bucket_sizes(600, 256, growth=4) == [256, 256, 256]
  assert scheduler.bucket_sizes(560, 256) == [256, 256, 64]
  assert scheduler.bucket_sizes(3, 256) == [8]
  assert scheduler.bucket_sizes(0, 256) == []
  assert scheduler.bucket_sizes(200, 256) == [256]
  assert scheduler.bucket_sizes(129, 256) == [256]
  assert scheduler.bucket_sizes(127, 256) == [128]
  assert scheduler.bucket_sizes(9, 64, min_bucket=8, multiple=3) == [9]
  assert scheduler.bucket_sizes(3, 4) == [4]
  # growth 4: fewer shapes, more padding
  assert scheduler.bucket_sizes(3, 256, growth=4) == [16]
  assert scheduler.bucket_sizes(127, 256, growth=4) == [256]
  assert scheduler.bucket_sizes(9, 64, min_bucket=8, multiple=3,
                                growth=4) == [18]
  for n in range(1, 300):  # padding never exceeds the growth factor
    last = scheduler.bucket_sizes(n, 256)[-1]
    rest = n % 256 or 256
    assert rest <= last <= max(2 * rest, 8), n
  # a float growth: ceil(100 / 1.25**k) = 100, 80, 64, 52, 41, ..., 14, 11, 9
  assert scheduler.bucket_sizes(13, 100, growth=1.25) == [14]
  assert scheduler.bucket_sizes(70, 100, growth=1.25) == [80]
  assert scheduler.bucket_sizes(39, 100, growth=1.25) == [41]
  for n in range(1, 300):
    last = scheduler.bucket_sizes(n, 256, growth=1.25)[-1]
    rest = n % 256 or 256
    assert rest <= last <= max(1.25 * rest + 1, 8), n
  # growth 1: the next multiple of min_bucket (and of the device count)
  assert scheduler.bucket_sizes(70, 128, growth=1) == [72]
  assert scheduler.bucket_sizes(125, 128, growth=1) == [128]
  assert scheduler.bucket_sizes(13, 100, growth=1) == [14]  # 1.25-size
  assert scheduler.bucket_sizes(13, 100, growth=1, multiple=3) == [15]
  for n in range(1, 300):  # < 8 padded points and at most 1.25x
    last = scheduler.bucket_sizes(n, 256, growth=1)[-1]
    rest = n % 256 or 256
    assert rest <= last <= min(rest + 7, max(1.25 * rest + 1, 8)), n
  assert scheduler.bucket_sizes(200, 128, growth=1) == [128, 72]


def test_auto_growth_pads_long_stages_finely():
  apply_fn = lambda v, x: x.reshape(x.shape[0], -1)[:, :10]
  aa = attacks.get_attack('autoattack', apply_fn, steps=100,
                          n_target_classes=9, queries=5000)
  evals = {s.name: scheduler.stage_evals(s) for s in aa.stages}
  assert evals == {'apgd-ce': 100, 'apgd-t': 900, 'fab-t': 900,
                   'square': 5000}
  pgd = _kernels()['pgd']
  assert scheduler.stage_evals(pgd) == 5
  assert scheduler.stage_growth('auto', pgd) == scheduler.SHORT_GROWTH == 16
  assert scheduler.stage_growth('auto', aa.stages[-1]) == \
      scheduler.LONG_GROWTH
  assert scheduler.stage_growth(4, aa.stages[-1]) == 4.0
  for bad in (1.02, 0, 'fine', True, 100):
    with pytest.raises(ValueError, match='growth'):
      scheduler.Scheduler(_linear, _kernels(), GRID, batch_size=8,
                          growth=bad)


def test_consistency_false_attacks_only_clean_correct_points():
  # Deterministic kernels: robust counts are the same either way; without
  # consistency the misclassified points are never attacked and count as
  # consistent (x_adv = x).
  x, y, v = _digits()
  kernels = _kernels()
  full = scheduler.Scheduler(_linear, kernels, GRID, batch_size=256).run(
      v, x, y, seed=0)
  sch = scheduler.Scheduler(_linear, kernels, GRID, batch_size=256,
                            consistency=False)
  fast = sch.run(v, x, y, seed=0)
  ok = fast['fgsm']['examples']['clean']
  attacked = np.concatenate([c[3] for c in sch.calls])
  assert ok.all() or not np.isin(np.flatnonzero(~ok), attacked).any()
  assert np.isin(np.flatnonzero(ok), attacked).all()
  for name in kernels:
    assert fast[name]['robust'] == full[name]['robust'], name
    assert all(f >= c for f, c in zip(fast[name]['consistent'],
                                      full[name]['consistent']))
  with pytest.raises(ValueError, match='consistency'):
    scheduler.Scheduler(_linear, kernels, GRID, batch_size=8,
                        consistency='yes')


def test_equals_masked_evaluator_for_deterministic_kernels():
  # FGSM / PGD without random start on a linear model break monotonically in
  # eps, so worst case over eps == per-eps outcome: counts must be identical.
  x, y, v = _digits()
  kernels = _kernels()
  old = evaluate.RobustnessEvaluator(_linear, kernels, GRID,
                                     batch_size=256).run(v, x, y, seed=0)
  new = scheduler.Scheduler(_linear, kernels, GRID, batch_size=256).run(
      v, x, y, seed=0)
  for name in kernels:
    for key in ('clean_correct', 'robust', 'consistent', 'adv_nonfinite'):
      assert old[name][key] == new[name][key], (name, key)
    np.testing.assert_array_equal(old[name]['examples']['robust'],
                                  new[name]['examples']['robust'])
  assert new['pgd']['robust'][-1] <= new['fgsm']['robust'][-1]


def test_nested_eps_never_reattacks_a_broken_point():
  x, y, v = _digits()
  sch = scheduler.Scheduler(_linear, _kernels(), GRID, batch_size=128,
                            audit=0)
  out = sch.run(v, x, y, seed=0)
  decided = {n: set() for n in out}
  for name, _, eps, idx in sch.calls:
    assert eps > 0  # eps 0 is never attacked (kernels return x there)
    assert not decided[name] & set(idx.tolist()), (name, eps)
    k = list(GRID).index(eps)
    rob = out[name]['examples']['robust'][k]
    ok = out[name]['examples']['clean']
    decided[name] |= set(np.flatnonzero(ok & ~rob).tolist()) & set(
        idx.tolist())
  # every clean-correct point is attacked at the first eps > 0
  first = [c for c in sch.calls if c[0] == 'fgsm' and c[2] == GRID[1]]
  assert sum(len(c[3]) for c in first) == len(x)


def test_compiles_at_most_once_per_stage_and_bucket_size():
  x, y, v = _digits()
  traces = []
  pgd = attacks.get_attack('pgd', _linear, clip=(0.0, 1.0), steps=3,
                           random_start=False, loop='unroll')

  def kernel(variables, xb, yb, key, eps):
    traces.append(xb.shape[0])  # runs once per trace
    return pgd(variables, xb, yb, key, eps)

  sch = scheduler.Scheduler(_linear, {'pgd': kernel}, GRID, batch_size=128)
  sch.run(v, x, y, seed=0)
  sizes = {len(c[3]) for c in sch.calls}
  assert len(traces) == len(set(traces))
  assert len(traces) <= len({scheduler.bucket_sizes(n, 128)[-1]
                              for n in sizes} | {128})


def test_audit_reattacks_earlier_witnesses_without_updating():
  x, y, v = _digits()
  sch = scheduler.Scheduler(_linear, {'fgsm': _kernels()['fgsm']}, GRID,
                            batch_size=256, audit=16)
  out = sch.run(v, x, y, seed=0)['fgsm']
  assert [a['attacked'] for a in out['audit']] == [0, 0, 16, 16]
  # linear model: FGSM never un-breaks a point at a larger eps
  assert all(a['regressed'] == 0 for a in out['audit'])
  assert out['raw_robust'] == [float(r) for r in out['robust']]


class _Killed(scheduler.Scheduler):
  """A scheduler whose process "dies" (KeyboardInterrupt) at the call after
  `calls` bucket attacks."""

  def __init__(self, *args, calls: int, **kwargs):
    super().__init__(*args, **kwargs)
    self._left = calls

  def _attack_bucket(self, *args):
    if self._left == 0:
      raise KeyboardInterrupt('killed')
    self._left -= 1
    return super()._attack_bucket(*args)


@pytest.mark.parametrize('kill_after', [2, 5, 9])
def test_killed_and_resumed_gives_the_same_counts(tmp_path, kill_after):
  # 600 points, batch 128: 5 buckets at eps 0.02, so a kill after 2 calls is
  # inside the first attack's first eps, after 5 between eps, after 9 in a
  # later eps.
  x, y, v = _digits()
  ref_sch = scheduler.Scheduler(_linear, _kernels(), GRID, batch_size=128)
  ref = ref_sch.run(v, x, y, seed=3)
  state = str(tmp_path / 'state.npz')
  killed = _Killed(_linear, _kernels(), GRID, batch_size=128,
                   calls=kill_after)
  with pytest.raises(KeyboardInterrupt):
    killed.run(v, x, y, seed=3, state_path=state, save_every=0)
  resumed = scheduler.Scheduler(_linear, _kernels(), GRID, batch_size=128)
  out = resumed.run(v, x, y, seed=3, state_path=state, save_every=0)
  for name in ref:
    for key in ('robust', 'consistent', 'adv_nonfinite', 'broken_by'):
      assert out[name][key] == ref[name][key], (name, key)
  # no bucket is attacked twice: killed + resumed calls == uninterrupted
  assert len(killed.calls) + len(resumed.calls) == len(ref_sch.calls)
  assert len(killed.calls) == kill_after


def test_cpu_time_is_kept_per_stage_and_old_states_still_resume():
  x, y, v = _digits()
  out = scheduler.Scheduler(_linear, _kernels(), GRID, batch_size=128).run(
      v, x, y, seed=0)
  for name, c in out.items():
    assert set(c['cpu_seconds']) == set(c['stage_seconds']) == {name}
    # CPU time is spent (> 0) and, on 2 threads of XLA:CPU, at most a few
    # times the wall time.
    assert 0 < c['cpu_seconds'][name] <= 8 * c['seconds'] + 0.05
  # A state written before cpu time was kept: [wall, compile] per stage.
  times = {'pgd': [1.0, 0.5]}
  with scheduler_state.timed(times, 'pgd'):
    sum(range(10000))
  assert len(times['pgd']) == 3 and np.isnan(times['pgd'][2])
  assert times['pgd'][0] > 1.0


def test_state_of_another_evaluation_is_refused(tmp_path):
  x, y, v = _digits()
  state = str(tmp_path / 'state.npz')
  scheduler.Scheduler(_linear, _kernels(), GRID, batch_size=128).run(
      v, x, y, seed=0, state_path=state)
  with pytest.raises(ValueError, match='another evaluation'):
    scheduler.Scheduler(_linear, _kernels(), GRID, batch_size=128).run(
        v, x, y, seed=1, state_path=state)


def test_bad_arguments_raise_naming_the_value():
  with pytest.raises(ValueError, match='eps_grid'):
    scheduler.Scheduler(_linear, _kernels(), (0.1, -1.0), batch_size=8)
  with pytest.raises(ValueError, match='batch_size'):
    scheduler.Scheduler(_linear, _kernels(), GRID, batch_size=0)
  with pytest.raises(ValueError, match='audit'):
    scheduler.Scheduler(_linear, _kernels(), GRID, batch_size=8, audit=-1)


def test_cascade_counts_stage_contributions_and_is_no_weaker_than_a_stage():
  # A two-stage cascade of deterministic kernels (FGSM then PGD) against
  # each stage alone: the cascade's robust count is the per-point minimum.
  x, y, v = _digits()
  k = _kernels()
  cascade = registry.Attack('cascade', {'stages': ['clean', 'fgsm', 'pgd']},
                            k['pgd'].kernel, stages=(k['fgsm'], k['pgd']))
  out = scheduler.Scheduler(_linear, {'cascade': cascade, **k}, GRID,
                            batch_size=256).run(v, x, y, seed=0)
  for e in range(len(GRID)):
    assert out['cascade']['robust'][e] <= min(out['fgsm']['robust'][e],
                                              out['pgd']['robust'][e])
    by = out['cascade']['broken_by'][e]
    assert sum(by.values()) == len(x) - out['cascade']['robust'][e]
  rob = out['cascade']['examples']['robust']
  np.testing.assert_array_equal(
      rob, out['fgsm']['examples']['robust'] & out['pgd']['examples'][
          'robust'])


def test_dispatch_bound_model_runs_rolled_steps_with_the_same_counts(
    monkeypatch):
  # The linear digits model is far below loops.ROLL_BELOW_FLOPS: on CPU
  # 'auto' rolls its steps (kernels jitted whole, no host-driven step) in
  # coarse buckets; forced to 'host' (or with the bound at 0) a
  # deterministic PGD gives the same counts.
  x, y, v = _digits()
  kernels = {'pgd': attacks.get_attack('pgd', _linear, clip=(0.0, 1.0),
                                       steps=5, random_start=False),
             'square': attacks.get_attack('square', _linear, queries=60,
                                          clip=(0.0, 1.0))}
  host_steps = []
  real_host = scheduler.loops._host
  monkeypatch.setattr(scheduler.loops, '_host', lambda *a: (
      host_steps.append(a[2]), real_host(*a))[1])
  auto = scheduler.Scheduler(_linear, kernels, GRID, batch_size=128)
  out = auto.run(v, x, y, seed=3)
  cpu = jax.default_backend() == 'cpu'
  if cpu:
    assert out['pgd']['step_loop'] == 'fori' and auto.cheap
    assert not host_steps  # no step was driven from Python
  host_sch = scheduler.Scheduler(_linear, kernels, GRID, batch_size=128,
                                 step_loop='host')
  host = host_sch.run(v, x, y, seed=3)
  monkeypatch.setattr(scheduler.loops, 'ROLL_BELOW_FLOPS', 0.0)
  bound0 = scheduler.Scheduler(_linear, kernels, GRID, batch_size=128).run(
      v, x, y, seed=3)
  if cpu:
    assert host['pgd']['step_loop'] == bound0['pgd']['step_loop'] == 'host'
    assert host_steps and not host_sch.cheap
    # Coarse buckets for the long stage (Square) only when rolled cheaply.
    assert auto._growth(kernels['square']) == scheduler.SHORT_GROWTH
    assert host_sch._growth(kernels['square']) == scheduler.LONG_GROWTH
  for other in (host, bound0):
    assert other['pgd']['robust'] == out['pgd']['robust']
    assert other['pgd']['consistent'] == out['pgd']['consistent']
  sq = out['square']['robust']
  assert all(a >= b for a, b in zip(sq, sq[1:]))
  assert sq[0] == out['square']['clean_correct'] > sq[-1]
  with pytest.raises(ValueError, match="step_loop.*'rolled'"):
    scheduler.Scheduler(_linear, kernels, GRID, batch_size=8,
                        step_loop='rolled')


def test_retiring_broken_points_keeps_every_count(monkeypatch):
  # Host-driven APGD passes under the scheduler stop stepping the points
  # they broke (retire=True, the default): fewer rows are stepped, and every
  # count (one-stage APGD-CE with consistency, and a cascade) equals the
  # run in which every attacked point takes every step.
  x, y, v = _digits()
  x, y = x[:256], y[:256]
  ce = attacks.get_attack('apgd-ce', _linear, clip=(0.0, 1.0), steps=20)
  t = attacks.get_attack('apgd-t', _linear, clip=(0.0, 1.0), steps=20,
                         n_target_classes=3)
  kernels = {'apgd-ce': ce, 'cascade': registry.Attack(
      'cascade', {'stages': ['clean', 'apgd-ce', 'apgd-t']}, t.kernel,
      stages=(ce, t))}
  rows = []
  real = scheduler.loops._chunk_fn
  monkeypatch.setattr(scheduler.loops, '_chunk_fn', lambda b, n, s: (
      lambda i0, c, *a: (rows.append(jax.tree.leaves(c)[0].shape[0]),
                         real(b, n, s)(i0, c, *a))[1]))
  out = {}
  for retire in (False, True):
    rows.clear()
    out[retire] = scheduler.Scheduler(
        _linear, kernels, GRID, batch_size=128, step_loop='host',
        retire=retire).run(v, x, y, seed=1)
    out[retire]['rows'] = sum(rows)
  assert out[True]['rows'] < 0.8 * out[False]['rows']
  for name in kernels:
    for key in ('robust', 'consistent', 'broken_by'):
      assert out[True][name][key] == out[False][name][key], (name, key)
  robust = out[True]['cascade']['robust']
  assert robust[1] > robust[2] > 0   # some points broken, some robust
  with pytest.raises(ValueError, match="retire.*'yes'"):
    scheduler.Scheduler(_linear, kernels, GRID, batch_size=8, retire='yes')
