"""Transfer matrix: the diagonal is the white-box evaluation; copies, ensembles,
universal perturbations, and rates with confidence intervals."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust import attacks
from tinyrobust.evaluation import crafting
from tinyrobust.evaluation import transfer

from tinyrobust.evaluation import prepare_run
from tinyrobust.evaluation import robustness_run

GRID = (0.0, 0.05, 0.1, 0.2)
CLIP = (0.0, 1.0)
PGD = dict(norm='linf', steps=3, clip=CLIP)


def linear_apply(v, x):
  return x.reshape(x.shape[0], -1) @ v['w'] + v['b']


def mlp_apply(v, x):
  h = jnp.tanh(x.reshape(x.shape[0], -1) @ v['w1'] + v['b1'])
  return h @ v['w2'] + v['b2']


def _ridge(features, y, lam=1e-1):
  """Least squares onto one-hot labels: `[F, 10]` weights (no training loop,
  so no compilation)."""
  f = features.astype(np.float64)
  t = np.eye(10)[y] - 0.1
  return np.linalg.solve(f.T @ f + lam * np.eye(f.shape[1]), f.T @ t)


@functools.lru_cache(maxsize=1)
def _setup():
  """Two digits models fit in closed form (a linear model; an MLP with a
  random tanh layer and a ridge output layer), 128 test digits in [0, 1]^64.
  Logits are scaled by 10 so that the softmax is not flat."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  data = datasets.load_digits()
  x = (data.data / 16.0).astype(np.float32)
  y = data.target.astype(np.int32)
  perm = np.random.default_rng(0).permutation(len(x))
  x, y = x[perm], y[perm]
  x_tr, y_tr = x[:1000], y[:1000]
  ones = np.ones((len(x_tr), 1))
  wb = _ridge(np.concatenate([x_tr, ones], 1), y_tr) * 10
  lin = {'w': jnp.asarray(wb[:-1], jnp.float32),
         'b': jnp.asarray(wb[-1], jnp.float32)}
  rng = np.random.default_rng(1)
  w1 = rng.normal(size=(64, 48)) / 3
  b1 = rng.normal(size=(48,)) / 2
  h = np.tanh(x_tr @ w1 + b1)
  w2 = _ridge(np.concatenate([h, ones], 1), y_tr) * 10
  mlp = {'w1': jnp.asarray(w1, jnp.float32), 'b1': jnp.asarray(b1, jnp.float32),
         'w2': jnp.asarray(w2[:-1], jnp.float32),
         'b2': jnp.asarray(w2[-1], jnp.float32)}
  models = {'linear': (linear_apply, lin), 'mlp': (mlp_apply, mlp)}
  return models, x_tr, y_tr, x[1000:1128], y[1000:1128]


def copy_apply(v, x):
  """The MLP again, as a different function object."""
  return mlp_apply(v, x)


@functools.lru_cache(maxsize=2)
def _matrix(engine='scheduler'):
  """PGD crafted on the linear model and the MLP, evaluated on both; with
  the scheduler also on a copy of the MLP, with the sweep also crafted on an
  ensemble of the MLP with itself."""
  models, _, _, x, y = _setup()
  sources, targets, host = dict(models), dict(models), None
  if engine == 'scheduler':
    targets['copy'] = (copy_apply, models['mlp'][1])
    host = {'linear_np': _numpy_linear(models['linear'][1])}
  else:
    sources['ens'] = {'m1': models['mlp'], 'm2': models['mlp']}
  return transfer.transfer_matrix(sources, targets, x, y, attack='pgd',
                                  options=PGD, eps_grid=GRID, seed=7,
                                  batch_size=64, engine=engine,
                                  host_targets=host)


def _numpy_linear(v):
  """The linear model in NumPy: a host target (as LiteRT's int8 logits)."""
  w, b = np.asarray(v['w'], np.float64), np.asarray(v['b'], np.float64)
  return lambda x: np.asarray(x, np.float64).reshape(len(x), -1) @ w + b


def _white_box(model, x, y, attack_names, engine='scheduler'):
  apply_fn, v = model
  return robustness_run(apply_fn, v, (x, y), attacks=attack_names,
                        eps_grid=GRID, batch_size=64, seed=7, clip=CLIP,
                        norm='linf', pgd_steps=3, sanity_checks=False,
                        engine=engine)


@pytest.mark.parametrize('engine', ['scheduler', 'sweep'])
@pytest.mark.parametrize('name', ['linear', 'mlp'])
def test_diagonal_equals_white_box_evaluation(name, engine):
  models, _, _, x, y = _setup()
  res = _matrix(engine)
  # scheduler: 2 sources x (3 targets + a host target); sweep: 3 x 2.
  assert len(res.records) == (8 if engine == 'scheduler' else 6) * len(GRID)
  assert {r['engine'] for r in res.records} == {engine}
  for model in [models[name]]:
    wb = _white_box(model, x, y, ['pgd'], engine)
    per_eps = wb.results['attacks']['pgd']['per_eps']
    rows = [r for r in res.records
            if r['crafted_on'] == name and r['target'] == name]
    assert [r['robust_correct'] for r in rows] == [
        p['robust_correct'] for p in per_eps]
    assert [r['consistent'] for r in rows] == [p['consistent'] for p in per_eps]
    assert all(r['white_box'] for r in rows) and rows[0]['eps'] == 0.0
    assert rows[0]['clean_correct'] == wb.results['clean_correct']
    assert rows[0]['robust_correct'] == rows[0]['clean_correct']
    np.testing.assert_array_equal(res.examples[(name, name)]['robust'],
                                  wb.examples['pgd']['robust'])
    assert rows[-1]['robust_accuracy'] < rows[0]['robust_accuracy'] - 0.3


@pytest.mark.parametrize('engine', ['scheduler', 'sweep'])
def test_attack_index_reproduces_a_later_attack_of_the_evaluator(engine):
  models, _, _, x, y = _setup()
  x, y = x[:64], y[:64]
  lin = models['linear']
  wb = _white_box(lin, x, y, ['fgsm', 'pgd'], engine)
  res = transfer.transfer_matrix({'linear': lin}, {'linear': lin}, x, y,
                                 attack='pgd', options=PGD, eps_grid=GRID,
                                 seed=7, batch_size=64, attack_index=1,
                                 engine=engine)
  for k in ('robust', 'consistent'):
    np.testing.assert_array_equal(res.examples[('linear', 'linear')][k],
                                  wb.examples['pgd'][k])
  if engine == 'sweep':  # the very inputs of the evaluator's own `craft`
    evaluator = prepare_run(*lin, (x, y), attacks=['fgsm', 'pgd'],
                            eps_grid=GRID, batch_size=64, seed=7, clip=CLIP,
                            pgd_steps=3, engine='sweep')[0]
    want = evaluator.craft(lin[1], x, y, seed=7)['pgd']
    attack = evaluator.attacks['pgd']
    got = [crafting.craft(*lin, attack, x, y, eps_grid=GRID, seed=7,
                          batch_size=64, attack_index=i, engine='sweep')
           for i in (1, 0)]
    np.testing.assert_array_equal(got[0], want)
    assert not np.array_equal(got[1], want)  # the index matters


def _check_rates(res):
  for r in res.records:
    assert r['white_box'] == (r['target'] == r['crafted_on'])
    if r['eps'] == 0.0:  # no perturbation: nothing transfers
      assert r['robust_correct'] == r['clean_correct']
      assert r['transferred'] == 0
    assert r['transferred'] == r['clean_correct'] - r['robust_correct']
    assert r['transfer_success_rate'] == pytest.approx(
        1 - r['robust_accuracy'] / r['clean_accuracy'])


def test_identical_copy_equals_white_box_and_rates_are_consistent():
  res = _matrix('scheduler')
  same, other = res.examples[('mlp', 'mlp')], res.examples[('mlp', 'copy')]
  for k in ('clean', 'robust', 'consistent', 'transferred'):
    np.testing.assert_array_equal(same[k], other[k])
  _check_rates(res)
  assert all(r['attack'] == 'pgd' and r['attack_config']['steps'] == 3
             for r in res.records)
  # Transfer is weaker than white-box on the other model at the largest eps.
  rate = {(r['crafted_on'], r['target']): r['transfer_success_rate']
          for r in res.records if r['eps'] == GRID[-1]}
  assert rate[('linear', 'linear')] > rate[('linear', 'mlp')] > 0.0


def test_host_target_scores_as_the_jax_target():
  """A host target (NumPy logits, as an int8 flatbuffer in LiteRT) judged
  on the same x_adv gives the JAX target's per-example outcomes."""
  res = _matrix('scheduler')
  for s in ('linear', 'mlp'):
    jax_t, host_t = res.examples[(s, 'linear')], res.examples[
        (s, 'linear_np')]
    for k in ('clean', 'robust', 'consistent', 'transferred', 'nonfinite'):
      np.testing.assert_array_equal(host_t[k], jax_t[k])
  assert 'linear_np' in res.protocol['targets']
  with pytest.raises(ValueError, match=r"\['linear'\]"):
    transfer.transfer_matrix({'mlp': _setup()[0]['mlp']}, dict(_setup()[0]),
                             _setup()[3], _setup()[4], eps_grid=GRID,
                             seed=0, batch_size=64,
                             host_targets={'linear': lambda x: x})


def test_mifgsm_by_name_and_copy():
  models, _, _, x, y = _setup()
  mlp = models['mlp']
  res = transfer.transfer_matrix(
      {'mlp': mlp}, {'mlp': mlp, 'copy': (copy_apply, mlp[1])}, x, y,
      attack='mi-fgsm', options=dict(norm='linf', steps=3, clip=CLIP),
      eps_grid=GRID, seed=3, batch_size=64)
  np.testing.assert_array_equal(res.examples[('mlp', 'mlp')]['robust'],
                                res.examples[('mlp', 'copy')]['robust'])
  _check_rates(res)
  assert res.records[-1]['attack'] == 'mi-fgsm'
  assert res.records[-1]['robust_accuracy'] < 0.5


def test_ensemble_source_of_identical_members_equals_the_member():
  models, _, _, x, _ = _setup()
  res = _matrix('sweep')
  for t in ('linear', 'mlp'):
    np.testing.assert_array_equal(res.examples[('ens', t)]['robust'],
                                  res.examples[('mlp', t)]['robust'])
  ens = [r for r in res.records if r['crafted_on'] == 'ens']
  assert ens[0]['source_members'] == ['m1', 'm2']
  # Mean of logits: the ensemble model is the average of its members.
  apply_fn, vs = transfer.ensemble([models['mlp'], models['linear']])
  xb = jnp.asarray(x[:5])
  np.testing.assert_allclose(
      np.asarray(apply_fn(vs, xb)),
      (np.asarray(mlp_apply(models['mlp'][1], xb)) + np.asarray(linear_apply(
          models['linear'][1], xb))) / 2, rtol=1e-5, atol=1e-5)


def test_universal_transfer_counts_match_direct_evaluation():
  models, x_tr, y_tr, x, y = _setup()
  uap = attacks.fit_universal(*models['mlp'], x_tr, y_tr, eps=0.1,
                              clip=CLIP, epochs=2, batch_size=100, seed=0,
                              source_names=['mlp'])
  res = transfer.universal_transfer(uap, models, x, y, batch_size=64)
  x_adv = np.clip(x + uap.delta, 0.0, 1.0)
  for r in res.records:
    apply_fn, v = models[r['target']]
    clean = np.argmax(np.asarray(apply_fn(v, x)), 1) == y
    adv = np.argmax(np.asarray(apply_fn(v, x_adv)), 1) == y
    assert r['crafted_on'] == 'mlp' and r['attack'] == 'universal'
    assert r['eps'] == pytest.approx(0.1)
    assert r['clean_correct'] == clean.sum()
    assert r['robust_correct'] == (clean & adv).sum()
  mlp = next(r for r in res.records if r['target'] == 'mlp')
  assert mlp['robust_accuracy'] < mlp['clean_accuracy']


def test_rate_ci_wilson_closed_form_and_bootstrap():
  s = np.array([1] * 8 + [0] * 2, bool)
  ci = transfer.rate_ci(s)
  # Wilson 95% for 8/10 (z = 1.95996): (0.4902, 0.9433).
  assert ci['rate'] == 0.8 and ci['k'] == 8 and ci['n'] == 10
  assert ci['lo'] == pytest.approx(0.4902, abs=1e-4)
  assert ci['hi'] == pytest.approx(0.9433, abs=1e-4)
  big = np.random.default_rng(0).random(2000) < 0.3
  w, b = transfer.rate_ci(big), transfer.rate_ci(big, method='bootstrap')
  assert b['rate'] == w['rate']
  assert abs(b['lo'] - w['lo']) < 0.01 and abs(b['hi'] - w['hi']) < 0.01
  with pytest.raises(ValueError, match='bootstrap'):
    transfer.rate_ci(np.stack([big, big]))
  empty = transfer.rate_ci(s, valid=np.zeros(10, bool))
  assert empty['n'] == 0 and empty['rate'] is None


def test_transfer_finding_on_fabricated_outcomes():
  n = 400
  rng = np.random.default_rng(0)
  clean = rng.random(n) < 0.9
  never = np.zeros((2, n), bool)
  half = (rng.random((2, n)) < 0.5) & clean
  half[0] = False  # eps = 0: nothing transfers
  res = transfer.TransferResult(
      records=[], eps_grid=np.array([0.0, 0.1]), protocol={},
      examples={('big', 'tiny'): {'clean': clean, 'robust': clean & ~half,
                                  'transferred': half},
                ('big', 'big'): {'clean': clean, 'robust': never,
                                 'transferred': never}})
  f = transfer.transfer_finding(res, sources=['big'], targets=['tiny', 'big'],
                                eps=0.1)
  assert f['pairs'] == [['big', 'tiny']]     # white-box pair left out
  assert f['lo'] < 0.5 < f['hi'] and f['hi'] - f['lo'] < 0.15
  assert 'examples crafted on big transfer to tiny, big at rate' in \
      f['statement']
  f0 = transfer.transfer_finding(res, sources=['big'], targets=['tiny'],
                                 eps=0.0)
  assert f0['rate'] == 0.0 and f0['hi'] == 0.0  # "transfers" is false here
  with pytest.raises(ValueError, match='grid'):
    transfer.transfer_finding(res, sources=['big'], targets=['tiny'], eps=0.3)


def test_bad_inputs_raise_before_compiling():
  models, _, _, x, y = _setup()
  kw = dict(eps_grid=GRID, seed=0, batch_size=64)
  with pytest.raises(ValueError, match='eps_grid'):
    transfer.transfer_matrix(models, models, x, y, **dict(kw, eps_grid=[-1]))
  with pytest.raises(ValueError, match='targeted'):
    transfer.transfer_matrix(models, models, x, y, attack='pgd',
                             options=dict(targeted=True), **kw)
  with pytest.raises(ValueError, match='labels'):
    transfer.transfer_matrix(models, models, x, y + 10, **kw)
  with pytest.raises(ValueError, match='sources'):
    transfer.transfer_matrix({}, models, x, y, **kw)
