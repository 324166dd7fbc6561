"""Retiring decided examples (`loops.retire_as`): host-driven loops stop
stepping examples once their `done` flag is set, shrink the batch, and put
every row back in place; open examples' trajectories do not change."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyrobust import attacks
from tinyrobust.attacks import loops


def _counter_body(i, c, limit):
  """Per example: `n` counts the steps it took; found once n >= limit."""
  del i
  n = c['n'] + 1
  return dict(c, n=n, found=c['found'] | (n >= limit))


def _done(c):
  return c['found']


@pytest.fixture
def chunk_sizes(monkeypatch):
  """The batch size of every jitted chunk call (a spy on `_chunk_fn`)."""
  sizes, real = [], loops._chunk_fn   # pylint: disable=protected-access

  def spy(body, n, stop):
    fn = real(body, n, stop)

    def call(i0, carry, *args):
      sizes.append(jax.tree.leaves(carry)[0].shape[0])
      return fn(i0, carry, *args)
    return call

  monkeypatch.setattr(loops, '_chunk_fn', spy)
  return sizes


def _counter_carry(limit):
  b = len(limit)
  return {'n': jnp.zeros(b, jnp.int32), 'found': jnp.zeros(b, bool),
          'row': jnp.arange(b)}


def test_retired_rows_stop_after_they_are_done_and_return_in_place(
    chunk_sizes):
  steps = 30
  # 5 rows never done, the others done after 0 .. 10 steps
  limit = jnp.asarray([1, 2, 3, 99, 4, 5, 6, 7, 99, 8, 9, 10, 99, 2, 99, 99,
                       1, 1, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9])
  carry = _counter_carry(limit)
  plain = loops.run_loop(_counter_body, carry, steps, args=(limit,),
                         loop='host', done=_done, batched=(True,))
  assert chunk_sizes == [32] * steps   # outside retire_as: done is ignored
  np.testing.assert_array_equal(plain['n'], steps)
  chunk_sizes.clear()
  with loops.retire_as(2):
    out = loops.run_loop(_counter_body, carry, steps, args=(limit,),
                         loop='host', done=_done, batched=(True,))
  n, lim = np.asarray(out['n']), np.asarray(limit)
  np.testing.assert_array_equal(out['row'], np.arange(32))  # rows in place
  never = lim > steps
  np.testing.assert_array_equal(n[never], steps)   # open rows: every step
  # A shrink waits until at most half the rows are open: after step 9 six
  # are (limit 10 and the never-done), so 32 rows -> 8 (2 * 4) there; rows
  # done by then stopped at 9 steps, the limit-10 row stays in the batch.
  np.testing.assert_array_equal(n[lim <= 9], 9)
  np.testing.assert_array_equal(n[lim == 10], steps)
  np.testing.assert_array_equal(out['found'], ~never)
  assert chunk_sizes == [32] * 9 + [8] * (steps - 9)
  assert sum(chunk_sizes) < 0.5 * 32 * steps
  # The caller's arrays are untouched (the carry is copied before donating)
  np.testing.assert_array_equal(carry['n'], 0)


def test_all_done_stops_and_traced_calls_ignore_done(chunk_sizes):
  limit = jnp.asarray([1, 2, 3, 1, 2, 3, 1, 2])
  with loops.retire_as(1):
    out = loops.run_loop(_counter_body, _counter_carry(limit), 50,
                         args=(limit,), loop='host', done=_done,
                         batched=(True,))
    # 8 rows -> 4 once two are open (after 2 steps), then none is: stop
    assert chunk_sizes == [8, 8, 4]
    np.testing.assert_array_equal(out['n'], np.maximum(limit, 2))
    traced = jax.jit(lambda c, lim: loops.run_loop(
        _counter_body, c, 12, args=(lim,), loop='host', done=_done,
        batched=(True,)))(_counter_carry(limit), limit)
  np.testing.assert_array_equal(traced['n'], 12)   # rolled: all steps


def test_bad_retire_options_raise():
  limit = jnp.asarray([1, 2])
  with loops.retire_as(1):
    with pytest.raises(ValueError, match='batched'):
      loops.run_loop(_counter_body, _counter_carry(limit), 3, args=(limit,),
                     loop='host', done=_done)
  for bad in (0, -2, 1.5, True, '8'):
    with pytest.raises(ValueError, match=repr(bad).replace('.', r'\.')):
      with loops.retire_as(bad):
        pass


@pytest.mark.parametrize('loss,targets', [('ce', 1), ('dlr-targeted', 3)])
def test_apgd_retiring_finds_the_same_examples(digits_mlp, chunk_sizes, loss,
                                               targets):
  apply_fn, v, x, y = digits_mlp
  x, y = x[:64], y[:64]
  eps, key = 0.1, jax.random.key(3)
  attack = attacks.make_apgd(apply_fn, loss=loss, steps=25,
                             n_target_classes=targets, clip=(0.0, 1.0),
                             loop='host', return_info=True)
  plain, info = attack(v, x, y, key, eps)
  n_plain = len(chunk_sizes)
  with loops.retire_as(8):
    fast, info_fast = attack(v, x, y, key, eps)
  sizes = chunk_sizes[n_plain:]
  assert min(sizes) < 64 and sum(sizes) < sum(chunk_sizes[:n_plain])
  success = np.asarray(info['success'])
  assert 0 < success.sum() < len(y) - 2   # some broken, some robust
  np.testing.assert_array_equal(info_fast['success'], success)
  # Not found: the same trajectory, so the same output
  np.testing.assert_allclose(np.asarray(fast)[~success],
                             np.asarray(plain)[~success], atol=1e-6)
  # Found: a misclassified example inside the ball and the clip range
  pred = np.asarray(jnp.argmax(apply_fn(v, fast), -1))
  assert np.all(pred[success] != np.asarray(y)[success])
  assert float(jnp.max(jnp.abs(fast - x))) <= eps + 1e-6
  assert float(fast.min()) >= 0.0 and float(fast.max()) <= 1.0
  # Clean-misclassified points run every step, as without retiring
  wrong = np.asarray(jnp.argmax(apply_fn(v, x), -1) != y)
  assert wrong.any()
  np.testing.assert_allclose(np.asarray(fast)[wrong],
                             np.asarray(plain)[wrong], atol=1e-6)
