"""Tests for tinyrobust.evaluation: counts, flags, determinism, sharding, I/O
(and the `attack` section reader, tinyrobust.attacks.config)."""

import csv
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tinyrobust import attacks
from tinyrobust import evaluation as evaluate
from tinyrobust.attacks import config as attack_config_lib

N, D, K = 40, 6, 3


def _problem(seed=0):
  rng = np.random.default_rng(seed)
  v = {'w': jnp.asarray(rng.normal(size=(D, K)), jnp.float32),
       'b': jnp.zeros((K,), jnp.float32)}
  x = rng.uniform(0, 1, size=(N, D)).astype(np.float32)
  # Labels mostly agree with the model so clean accuracy is high but not 1.
  y = (x @ np.asarray(v['w'])).argmax(1).astype(np.int32)
  y[:5] = (y[:5] + 1) % K
  return v, x, y


def apply_fn(v, x):
  return x @ v['w'] + v['b']


GRID = [0.0, 0.05, 0.2]


def test_counts_match_direct_computation():
  v, x, y = _problem()
  res = evaluate.evaluate_robustness(
      apply_fn, v, (x, y), attacks=['fgsm', 'pgd'], eps_grid=GRID,
      batch_size=16, seed=0, pgd_steps=3, clip=(0.0, 1.0))
  assert res['denominator'] == N and res['num_examples'] == N
  clean_pred = np.asarray(apply_fn(v, x)).argmax(1)
  assert res['clean_correct'] == int((clean_pred == y).sum()) == N - 5
  fgsm = attacks.make_fgsm(apply_fn, clip=(0.0, 1.0))
  for p in res['attacks']['fgsm']['per_eps']:
    adv = np.asarray(apply_fn(v, fgsm(v, x, y, jax.random.key(0),
                                      p['eps']))).argmax(1)
    assert p['robust_correct'] == int(((adv == y) & (clean_pred == y)).sum())
    assert p['consistent'] == int((adv == clean_pred).sum())
    assert p['robust_accuracy'] == p['robust_correct'] / N
  for name in ('fgsm', 'pgd'):
    eps0 = res['attacks'][name]['per_eps'][0]
    assert eps0['robust_correct'] == res['clean_correct']
    assert eps0['consistent'] == N
    robust = [p['robust_correct'] for p in res['attacks'][name]['per_eps']]
    assert robust[-1] < robust[0]  # the attack does something
  assert res['sanity_ok'] and not res['flags']
  assert len(res['rows']) == 2 * len(GRID)


def test_deterministic_for_seed_and_dataset_clip():
  v, x, y = _problem()

  class FakeDataset:  # duck-typed tinyrobust.data.Dataset
    def __init__(self):
      self.x, self.y, self.num_classes = x, y, K
      self.input_range = (0.0, 1.0)

  kw = dict(attacks=['pgd'], eps_grid=GRID, batch_size=16, pgd_steps=2)
  a = evaluate.evaluate_robustness(apply_fn, v, FakeDataset(), seed=3, **kw)
  b = evaluate.evaluate_robustness(apply_fn, v, FakeDataset(), seed=3, **kw)
  assert a == b
  assert a['clip'] == [0.0, 1.0]
  assert a['attacks']['pgd']['config']['clip'] == [0.0, 1.0]


def test_sanity_flags():
  v, x, y = _problem()
  fgsm = attacks.make_fgsm(apply_fn)

  def no_op(variables, x, y, key, eps):  # a "PGD" that never moves
    del variables, y, key, eps
    return x

  no_op.kind, no_op.config = 'pgd', {'norm': 'linf'}

  def masked(variables, x, y, key, eps):  # strong at small eps only
    return jnp.where(eps < 0.1, fgsm(variables, x, y, key, 0.3), x)

  res = evaluate.evaluate_robustness(
      apply_fn, v, (x, y), attacks={'fgsm': fgsm, 'pgd': no_op,
                                    'masked': masked},
      eps_grid=GRID, batch_size=64, seed=0)
  types = {(f['type'], f['attack']) for f in res['flags']}
  assert ('pgd_weaker_than_fgsm', 'pgd') in types
  assert ('robust_accuracy_increases_with_eps', 'masked') in types
  assert not res['sanity_ok']
  rows = {(r['attack'], r['eps']): r['flags'] for r in res['rows']}
  assert 'robust_accuracy_increases_with_eps' in rows[('masked', 0.2)]
  assert rows[('fgsm', 0.2)] == ''


@pytest.mark.parametrize('kwargs,match', [
    (dict(eps_grid=[0.1, -0.1]), 'eps_grid'),
    (dict(eps_grid=[]), 'eps_grid'),
    (dict(eps_grid=[float('nan')]), 'eps_grid'),
    (dict(batch_size=0), 'batch_size'),
    (dict(seed=-1), 'seed'),
    (dict(attacks=['fgsm', 'cw']), 'Unknown attack'),
    (dict(attacks=[]), 'attacks'),
    (dict(norm='l1'), 'norm'),
    (dict(pgd_steps=0), 'steps'),
])
def test_bad_options_raise(kwargs, match):
  v, x, y = _problem()
  args = dict(attacks=['fgsm', 'pgd'], eps_grid=GRID, batch_size=8, seed=0)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    evaluate.evaluate_robustness(apply_fn, v, (x, y), **args)


def test_bad_data_raise():
  v, x, y = _problem()
  args = dict(attacks=['fgsm'], eps_grid=GRID, batch_size=8, seed=0)
  with pytest.raises(ValueError, match='labels'):
    evaluate.evaluate_robustness(apply_fn, v, (x, np.full(N, K)), **args)
  bad_x = x.copy()
  bad_x[3, 1] = np.nan
  with pytest.raises(ValueError, match='NaN'):
    evaluate.evaluate_robustness(apply_fn, v, (bad_x, y), **args)
  with pytest.raises(ValueError, match='y must have shape'):
    evaluate.evaluate_robustness(apply_fn, v, (x, y[:-1]), **args)


def test_write_results_json_and_csv(tmp_path):
  v, x, y = _problem()
  res = evaluate.evaluate_robustness(
      apply_fn, v, (x, y), attacks=['fgsm'], eps_grid=GRID, batch_size=64,
      seed=0)
  json_path, csv_path = evaluate.write_results(res, str(tmp_path))
  with open(json_path) as f:
    loaded = json.load(f)
  assert loaded['denominator'] == N
  assert loaded['attacks']['fgsm']['per_eps'][1]['eps'] == GRID[1]
  with open(csv_path) as f:
    rows = list(csv.DictReader(f))
  assert [float(r['eps']) for r in rows] == GRID
  assert {'attack', 'robust_accuracy', 'consistency', 'clean_accuracy',
          'denominator', 'flags'} <= set(rows[0])


def test_attack_config_merges_defaults():
  c = ml_collections.ConfigDict({'seed': 0})
  assert attack_config_lib.attack_config(c).pgd_steps == 10
  c.attack = ml_collections.ConfigDict({'eps_grid': [0.0, 0.5],
                                        'max_examples': 7})
  merged = attack_config_lib.attack_config(c)
  assert tuple(merged.eps_grid) == (0.0, 0.5) and merged.max_examples == 7
  assert tuple(merged.attacks) == ('fgsm', 'pgd')
  c.attack.epsilon = 0.1
  with pytest.raises(ValueError, match='epsilon'):
    attack_config_lib.attack_config(c)


_SHARDED_SCRIPT = textwrap.dedent("""
    import json, os
    os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=4'
    os.environ['JAX_PLATFORMS'] = 'cpu'
    import jax, jax.numpy as jnp, numpy as np
    from tinyrobust import evaluation as evaluate
    rng = np.random.default_rng(0)
    v = {'w1': jnp.asarray(rng.normal(size=(6, 8)), jnp.float32),
         'w2': jnp.asarray(rng.normal(size=(8, 3)), jnp.float32)}
    f = lambda v, x: jnp.tanh(x @ v['w1']) @ v['w2']
    x = rng.uniform(0, 1, size=(37, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=37).astype(np.int32)
    kw = dict(attacks=['fgsm', 'pgd'], eps_grid=[0.0, 0.1, 0.3],
              batch_size=8, seed=0, pgd_steps=3, clip=(0.0, 1.0),
              engine='sweep')  # SPMD; the scheduler: test_cpu_devices
    many = evaluate.robustness_run(f, v, (x, y), devices=jax.devices(),
                                   **kw).results
    one = evaluate.robustness_run(f, v, (x, y), devices=jax.devices()[:1],
                                  **kw).results
    print(json.dumps({'n_devices': len(jax.devices()), 'many': many,
                      'one': one}))
""")


def test_sharded_over_fake_devices_matches_one_device():
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)
  out = subprocess.run([sys.executable, '-c', _SHARDED_SCRIPT], env=env,
                       capture_output=True, text=True, timeout=300,
                       check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  got = json.loads(out.stdout.strip().splitlines()[-1])
  assert got['n_devices'] == 4
  many, one = got['many'], got['one']
  assert many['num_devices'] == 4 and one['num_devices'] == 1
  many.pop('num_devices'), one.pop('num_devices')
  assert many == one


def test_precompiled_evaluator_runs_without_compiling_and_agrees():
  """`precompile` on abstract variables (as a search does while a candidate
  trains) leaves nothing to compile for `run`; results are unchanged."""
  v, x, y = _problem()
  kw = dict(attacks=['fgsm', 'pgd'], eps_grid=GRID, batch_size=16, seed=0,
            clip=(0.0, 1.0))
  plain = evaluate.robustness_run(apply_fn, v, (x, y), **kw)
  abstract = jax.eval_shape(lambda: v)
  ev, xs, _, _ = evaluate.prepare_run(apply_fn, abstract, (x, y), **kw)
  assert ev.precompile(abstract, xs) > 0
  compiles = []
  listener = lambda name, secs, **_: compiles.append(name) if (
      name == '/jax/core/compile/backend_compile_duration') else None
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    counts = ev.run(v, xs, y, seed=0)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert not compiles, compiles
  for name in ('fgsm', 'pgd'):
    assert counts[name]['robust'] == [
        p['robust_correct'] for p in plain.results['attacks'][name]['per_eps']]
  fast = evaluate.robustness_run(apply_fn, v, (x, y), evaluator=ev,
                                 sanity_checks=False, **kw)
  pick = lambda r: {k: [(p['robust_correct'], p['consistent'])
                         for p in a['per_eps']]
                     for k, a in r.results['attacks'].items()}
  assert pick(fast) == pick(plain)
  assert fast.results['noise_baseline'] is None
  with pytest.raises(ValueError, match='evaluator runs'):
    evaluate.robustness_run(apply_fn, v, (x, y), evaluator=ev,
                            **{**kw, 'attacks': ['fgsm']})
