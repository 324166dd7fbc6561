"""Tests of the step-loop driver `loops.run_loop` and of the kernels' loop
modes: every mode gives the same output, 'host' never retraces and falls
back to 'fori' under jit/vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust import attacks
from tinyrobust.attacks import loops

MODES = ('host', 'fori', 'scan', 'unroll', 3, 'auto')


def _affine_body():
  """`c <- a * c + i * b` with a trace counter (one count per traced step)."""
  traces = []

  def body(i, c, a, b):
    traces.append(1)
    return {'x': a * c['x'] + i.astype(jnp.float32) * b, 'n': c['n'] + 1}

  return body, traces


def _affine_closed_form(x0, a, b, start, steps):
  x = np.asarray(x0, np.float64)
  for i in range(start, start + steps):
    x = a * x + i * b
  return x


@pytest.mark.parametrize('loop', MODES)
@pytest.mark.parametrize('steps,chunk', [(7, 3), (6, 2), (1, 5)])
def test_modes_match_closed_form(loop, steps, chunk):
  body, _ = _affine_body()
  x0 = jnp.linspace(-1.0, 1.0, 4)
  a, b = jnp.float32(0.5), jnp.arange(4, dtype=jnp.float32)
  out = loops.run_loop(body, {'x': x0, 'n': jnp.int32(0)}, steps,
                       args=(a, b), start=2, loop=loop, chunk=chunk)
  np.testing.assert_allclose(out['x'], _affine_closed_form(x0, 0.5, b, 2,
                                                           steps), rtol=1e-6)
  assert int(out['n']) == steps


def test_host_traces_once_and_keeps_caller_arrays():
  body, traces = _affine_body()
  x0 = jnp.ones(5)
  carry = {'x': x0, 'n': jnp.int32(0)}
  args = (jnp.float32(0.9), jnp.ones(5))
  loops.run_loop(body, carry, 10, args=args, loop='host', chunk=4)
  n_traced = len(traces)
  assert n_traced == 4 + 2          # one chunk of 4 and one remainder of 2
  for _ in range(3):                # new values, same shapes: no retrace
    out = loops.run_loop(body, carry, 10, args=(jnp.float32(0.5), x0),
                         loop='host', chunk=4)
  assert len(traces) == n_traced
  assert not x0.is_deleted() and not carry['x'].is_deleted()
  np.testing.assert_allclose(out['x'], _affine_closed_form(x0, 0.5, x0, 0,
                                                           10), rtol=1e-6)


def test_host_falls_back_to_fori_under_jit_and_vmap():
  body, _ = _affine_body()
  run = lambda x, a: loops.run_loop(body, {'x': x, 'n': jnp.int32(0)}, 6,
                                    args=(a, x), loop='host', chunk=4)['x']
  assert loops.resolve('host', jnp.ones(2)) == 'host'
  assert loops.resolve('auto') == loops.default_loop()
  # traced: no host driving; on CPU up to TRACED_UNROLL_STEPS steps
  # unrolled (a rolled loop costs ~3x per step there), longer ones rolled
  jaxpr = str(jax.make_jaxpr(run)(jnp.ones(3), jnp.float32(0.5)))
  rolled = lambda n: 'scan[' in str(jax.make_jaxpr(
      lambda x, a: loops.run_loop(body, {'x': x, 'n': jnp.int32(0)}, n,
                                  args=(a, x), loop='host')['x'])(
                                      jnp.ones(3), jnp.float32(0.5)))
  cpu = loops.default_loop() == 'host'
  assert ('scan[' in jaxpr) != cpu
  assert rolled(loops.TRACED_UNROLL_STEPS + 1)
  assert not rolled(1)                   # one step is never a loop
  xs, a_s = jnp.ones((2, 3)), jnp.array([0.5, 0.25], jnp.float32)
  got = jax.vmap(run)(xs, a_s)
  for k in range(2):
    np.testing.assert_allclose(got[k], run(xs[k], a_s[k]), rtol=1e-6)
  np.testing.assert_allclose(jax.jit(run)(xs[0], a_s[0]), got[0], rtol=1e-6)


def test_stop_exits_early_with_the_same_result():
  """A counter that saturates at 5: the body is a no-op once stop holds."""
  calls = []

  def body(i, c, limit):
    calls.append(1)
    return jnp.where(c < limit, c + 1, c)

  def stop(c):
    return c >= 5

  outs = {}
  for loop in ('host', 'fori', 'unroll'):
    outs[loop] = int(loops.run_loop(body, jnp.int32(0), 40, args=(5,),
                                    loop=loop, chunk=2, stop=stop))
  assert outs == {'host': 5, 'fori': 5, 'unroll': 5}
  # Stopped before the first chunk: nothing runs, the carry comes back.
  assert int(loops.run_loop(body, jnp.int32(7), 40, args=(5,), loop='host',
                            chunk=2, stop=stop)) == 7


def test_scan_or_loop_agree():
  f = lambda c, x: c * 2.0 + x
  xs = jnp.arange(5, dtype=jnp.float32)
  a = loops.scan_or_loop(f, jnp.float32(1.0), xs, host=True)
  b = loops.scan_or_loop(f, jnp.float32(1.0), xs, host=False)
  assert float(a) == float(b) == 1.0 * 32 + 0 * 16 + 1 * 8 + 2 * 4 + 3 * 2 + 4


@pytest.mark.parametrize('kw', [dict(loop='while'), dict(loop=0),
                                dict(loop=True), dict(chunk=0),
                                dict(chunk=2.5), dict(steps=-1)])
def test_bad_options_raise(kw):
  body, _ = _affine_body()
  kw = dict(dict(steps=3, loop='host'), **kw)
  with pytest.raises(ValueError, match='loop|chunk|steps'):
    loops.run_loop(body, {'x': jnp.ones(2), 'n': jnp.int32(0)},
                   args=(1.0, 1.0), **kw)


# --- kernels: every loop mode gives the same output for the same key -------

def _assert_same(outs):
  ref = np.asarray(outs[0])
  for o in outs[1:]:
    np.testing.assert_allclose(np.asarray(o), ref, rtol=0, atol=1e-6)


def _counting(apply_fn):
  calls = []

  def counted(v, x):
    calls.append(1)
    return apply_fn(v, x)

  return counted, calls


@pytest.mark.parametrize('norm', ['linf', 'l2'])
def test_pgd_loop_modes_identical(digits_mlp, norm):
  apply_fn, v, x, y = digits_mlp
  x, y = x[:64], y[:64]
  eps = 0.1 if norm == 'linf' else 1.0
  key = jax.random.key(3)
  outs = [attacks.make_pgd(apply_fn, norm=norm, steps=7, clip=(0.0, 1.0),
                           loop=loop, chunk=3)(v, x, y, key, eps)
          for loop in ('host', 'fori', 'unroll', 'scan')]
  _assert_same(outs)
  assert float(jnp.max(jnp.abs(outs[0] - x))) > 0


def test_pgd_restarts_host_matches_vmapped(digits_mlp):
  apply_fn, v, x, y = digits_mlp
  x, y = x[:32], y[:32]
  outs = [attacks.make_pgd(apply_fn, steps=3, restarts=3, clip=(0.0, 1.0),
                           loop=loop, chunk=2)(v, x, y, jax.random.key(1),
                                               0.05)
          for loop in ('host', 'fori')]
  _assert_same(outs)


def test_pgd_host_never_retraces(digits_mlp):
  apply_fn, v, x, y = digits_mlp
  counted, calls = _counting(apply_fn)
  attack = attacks.make_pgd(counted, steps=5, loop='host', chunk=2)
  attack(v, x[:16], y[:16], jax.random.key(0), 0.1)
  n = len(calls)
  for seed in range(3):   # new keys, eps, inputs and variables: no retrace
    v2 = jax.tree.map(lambda a, s=seed: a * (1.0 + 0.01 * s), v)
    attack(v2, x[16:32], y[16:32], jax.random.key(seed), 0.05 + 0.01 * seed)
  assert len(calls) == n


def test_auto_loop_vmaps_over_eps(digits_mlp):
  apply_fn, v, x, y = digits_mlp
  x, y = x[:16], y[:16]
  attack = attacks.make_pgd(apply_fn, steps=3, clip=(0.0, 1.0))  # 'auto'
  grid = jnp.array([0.0, 0.05, 0.1])
  swept = jax.vmap(attack, in_axes=(None,) * 4 + (0,))(
      v, x, y, jax.random.key(2), grid)
  np.testing.assert_array_equal(swept[0], x)
  for k in range(1, 3):
    np.testing.assert_allclose(
        swept[k], attack(v, x, y, jax.random.key(2), grid[k]), atol=1e-6)


@pytest.mark.parametrize('norm,loss', [('linf', 'ce'), ('l2', 'ce'),
                                       ('linf', 'dlr'),
                                       ('l2', 'dlr-targeted')])
def test_apgd_loop_modes_identical(digits_mlp, norm, loss):
  apply_fn, v, x, y = digits_mlp
  x, y = x[:48], y[:48]
  eps = 0.05 if norm == 'linf' else 0.5
  key = jax.random.key(5)
  # 'unroll' is compared with the others on PGD and in the closed-form
  # test; here host (chunks of 4, one program) and fori, for CI time.
  outs = [attacks.make_apgd(apply_fn, norm=norm, loss=loss, steps=12,
                            n_target_classes=2, clip=(0.0, 1.0), loop=loop,
                            chunk=4, return_info=True)(v, x, y, key, eps)
          for loop in ('host', 'fori')]
  _assert_same([o[0] for o in outs])
  for k in ('step_size', 'n_halvings', 'success'):
    _assert_same([o[1][k] for o in outs])
  assert int(jnp.sum(outs[0][1]['n_halvings'])) > 0   # checkpoints ran


def test_apgd_host_never_retraces(digits_mlp):
  apply_fn, v, x, y = digits_mlp
  counted, calls = _counting(apply_fn)
  attack = attacks.make_apgd_t(counted, steps=6, n_target_classes=2,
                               loop='host', chunk=4)
  attack(v, x[:16], y[:16], jax.random.key(0), 0.1)
  n = len(calls)
  attack(v, x[16:32], y[16:32], jax.random.key(1), 0.05)
  assert len(calls) == n


def _noisy_apply(v, x, key):
  """The digits MLP (conftest's) behind Gaussian input noise."""
  x = x + 0.3 * jax.random.normal(key, x.shape, x.dtype)
  h = jnp.tanh(x.reshape(x.shape[0], -1) @ v['w1'] + v['b1'])
  return h @ v['w2'] + v['b2']


def test_eot_gradient_is_the_mean_of_independent_draws(digits_mlp):
  _, v, x, y = digits_mlp
  from tinyrobust.attacks import apgd  # pylint: disable=g-import-not-at-top
  from tinyrobust.attacks import losses  # pylint: disable=g-import-not-at-top
  x, y = x[:8], y[:8]
  evaluate = apgd._evaluator(_noisy_apply, 'ce', eot_iter=8,
                             random_apply=True)
  key = jax.random.key(9)
  loss, grad, _ = jax.jit(evaluate)(v, x, y, y, key)
  ce = losses.get_loss('ce')
  per_draw = [jax.grad(lambda z, k=k: jnp.sum(ce(_noisy_apply(v, z, k), y)))(x)
              for k in jax.random.split(key, 8)]
  np.testing.assert_allclose(grad, np.mean(per_draw, axis=0), atol=1e-5)
  losses_ = [ce(_noisy_apply(v, x, k), y) for k in jax.random.split(key, 8)]
  np.testing.assert_allclose(loss, np.mean(losses_, axis=0), rtol=1e-5)
  assert float(jnp.max(jnp.abs(per_draw[0] - per_draw[1]))) > 0


def test_eot_with_a_deterministic_model_changes_nothing(digits_mlp):
  apply_fn, v, x, y = digits_mlp
  x, y = x[:32], y[:32]
  outs = [attacks.make_apgd_ce(apply_fn, steps=8, eot_iter=e, loop='host',
                               clip=(0.0, 1.0))(v, x, y, jax.random.key(4),
                                                0.05)
          for e in (1, 4)]
  _assert_same(outs)


def test_eot_random_model_modes_identical_and_vmappable(digits_mlp):
  _, v, x, y = digits_mlp
  x, y = x[:32], y[:32]
  key = jax.random.key(6)
  make = lambda loop: attacks.make_apgd_dlr(
      _noisy_apply, steps=6, eot_iter=3, random_apply=True, loop=loop,
      chunk=2, clip=(0.0, 1.0))
  host = make('host')(v, x, y, key, 0.05)
  _assert_same([host, make('fori')(v, x, y, key, 0.05)])
  # A different key gives different EOT draws and so a different result.
  assert float(jnp.max(jnp.abs(host - make('host')(
      v, x, y, jax.random.key(7), 0.05)))) > 0
  swept = jax.vmap(make('auto'), in_axes=(None,) * 4 + (0,))(
      v, x, y, key, jnp.array([0.0, 0.05]))
  np.testing.assert_array_equal(swept[0], x)
  np.testing.assert_allclose(swept[1], host, atol=1e-6)


@pytest.mark.parametrize('norm', ['linf', 'l2'])
def test_square_loop_modes_identical_and_stop(digits_mlp, norm):
  apply_fn, v, x, y = digits_mlp
  x, y = x[:32].reshape(32, 8, 8, 1), y[:32]
  flat = lambda v_, z: apply_fn(v_, z.reshape(z.shape[0], -1))
  eps = 0.1 if norm == 'linf' else 1.0
  key = jax.random.key(8)
  modes = ('host', 'fori')
  outs = [attacks.make_square(flat, norm=norm, queries=12, clip=(0.0, 1.0),
                              loop=loop, chunk=2, return_info=True)(
                                  v, x, y, key, eps)
          for loop in modes]
  _assert_same([o[0] for o in outs])
  _assert_same([o[1]['queries'] for o in outs])
  assert bool(jnp.any(outs[0][1]['success']))


def test_square_host_stops_when_no_point_is_left(digits_mlp):
  """eps = 1 in L-inf breaks every digit within 3 queries (window sides 7
  then 5 of the 6 sizes of 500 queries): the other sizes never compile."""
  apply_fn, v, x, y = digits_mlp
  counted, calls = _counting(apply_fn)
  attack = attacks.make_square(counted, queries=500, clip=(0.0, 1.0),
                               loop='host', chunk=2, return_info=True)
  _, info = attack(v, x[:16], y[:16], jax.random.key(0), 1.0)
  assert bool(jnp.all(info['success']))
  assert int(jnp.max(info['queries'])) <= 3
  # Traced: class count, start, the sizes-7 and -5 chunks (1 + 2 steps),
  # valid check and info = 7; a run through all sizes traces >= 8 more.
  assert len(calls) <= 7
  n = len(calls)
  attack(v, x[16:32], y[16:32], jax.random.key(1), 1.0)
  assert len(calls) == n


def test_auto_as_changes_what_auto_means_within_the_block_only():
  outside = loops.resolve('auto')
  with loops.auto_as('fori'):
    assert loops.resolve('auto') == 'fori'
    assert loops.resolve('host') == 'host'  # an explicit mode is kept
    with loops.auto_as(None):
      assert loops.resolve('auto') == outside
  assert loops.resolve('auto') == outside
  with pytest.raises(ValueError, match="'unroll'"):
    with loops.auto_as('unroll'):
      pass


@pytest.mark.parametrize('factor, cpu_mode', [(0.1, 'fori'), (10.0, 'host')])
def test_auto_for_rolls_only_a_forward_pass_below_the_flop_bound(factor,
                                                                 cpu_mode):
  # A [m, k] @ [k, n] matmul costs 2 m k n flops in XLA's cost analysis.
  m, n = 64, 64
  k = max(1, int(factor * loops.ROLL_BELOW_FLOPS / (2 * m * n)))
  w = jax.ShapeDtypeStruct((k, n), jnp.float32)
  x = jax.ShapeDtypeStruct((m, k), jnp.float32)
  mode = loops.auto_for(lambda w_, x_: x_ @ w_, w, x)
  if loops.default_loop() == 'host':
    assert mode == cpu_mode
  else:  # GPU/TPU: always the backend's rolled default
    assert mode == loops.default_loop()
