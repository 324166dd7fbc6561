"""Stacked passes (`attacks.passes`): APGD-T's and FAB-T's per-target passes
run side by side as one batch give the outputs of one pass at a time, and
inside `retire_as` break exactly the same examples."""

import jax
import numpy as np
import pytest

from tinyrobust import attacks
from tinyrobust.attacks import apgd
from tinyrobust.attacks import loops
from tinyrobust.attacks import passes


@pytest.mark.parametrize('n_passes,batch,rows,expected', [
    (9, 7, 128, [(0, 9)]),                 # 63 rows: all at once
    (9, 14, 128, [(0, 9)]),                # 126 rows
    (9, 32, 128, [(0, 3), (3, 6), (6, 9)]),   # at most 4 fit: 3 balanced
    (9, 128, 128, [(p, p + 1) for p in range(9)]),
    (9, 500, 128, [(p, p + 1) for p in range(9)]),
    (9, 7, 1, [(p, p + 1) for p in range(9)]),
    (1, 3, 128, [(0, 1)]),
    (5, 20, 64, [(0, 3), (3, 5)]),
])
def test_groups_are_consecutive_balanced_and_within_rows(
    n_passes, batch, rows, expected):
  got = passes.groups(n_passes, batch, rows)
  assert got == expected
  assert [p for lo, hi in got for p in range(lo, hi)] == list(range(n_passes))
  assert all((hi - lo) * batch <= rows or hi - lo == 1 for lo, hi in got)


def test_same_example_any_matches_a_loop():
  rng = np.random.default_rng(0)
  example = rng.integers(0, 5, 40).astype(np.int32)
  hit = rng.random(40) < 0.15
  want = [bool(hit[example == e].any()) for e in example]
  got = passes.same_example_any(jax.numpy.asarray(example),
                                jax.numpy.asarray(hit))
  np.testing.assert_array_equal(np.asarray(got), want)


def test_pass_targets_are_the_next_most_likely_classes():
  logits = jax.numpy.asarray([[0.0, 3.0, 1.0, 2.0], [5.0, 4.0, 3.0, 2.0]])
  y = jax.numpy.asarray([1, 0], jax.numpy.int32)
  t = passes.pass_targets(logits, y, targeted=True, n_target_classes=2,
                          restarts=2)
  np.testing.assert_array_equal(np.asarray(t),
                                [[3, 1], [3, 1], [2, 2], [2, 2]])
  u = passes.pass_targets(logits, y, targeted=False, n_target_classes=9,
                          restarts=3)
  np.testing.assert_array_equal(np.asarray(u), [[1, 0]] * 3)


@pytest.fixture
def carry_rows(monkeypatch):
  """The batch of every `run_loop` call (a spy)."""
  sizes, real = [], loops.run_loop

  def spy(body, carry, steps, **kw):
    sizes.append(jax.tree.leaves(carry)[0].shape[0])
    return real(body, carry, steps, **kw)

  monkeypatch.setattr(loops, 'run_loop', spy)
  return sizes


def _run(name, digits_mlp, rows, monkeypatch, loop='host', eps=0.06,
         **options):
  apply_fn, v, x, y = digits_mlp
  monkeypatch.setattr(passes, 'ROWS', rows)
  if name.endswith('-t'):
    options['n_target_classes'] = 9
  atk = attacks.get_attack(name, apply_fn, clip=(0.0, 1.0), steps=12,
                           loop=loop, return_info=True, **options)
  x_adv, info = atk(v, x[:24], y[:24], jax.random.key(5), eps)
  broken = np.argmax(apply_fn(v, x_adv), -1) != np.asarray(y[:24])
  return np.asarray(x_adv), info, broken


@pytest.mark.parametrize('name,tol', [('apgd-t', 0.0), ('fab-t', 1e-6)])
def test_stacked_passes_equal_one_pass_at_a_time(name, tol, digits_mlp,
                                                 monkeypatch, carry_rows):
  one = _run(name, digits_mlp, 1, monkeypatch)
  assert carry_rows == [24] * 9                  # 9 passes of 24 rows
  carry_rows.clear()
  stacked = _run(name, digits_mlp, 128, monkeypatch)
  assert carry_rows == [120, 96]                 # 5 + 4 passes side by side
  rolled = _run(name, digits_mlp, 128, monkeypatch, loop='fori')
  for other in (stacked, rolled):
    np.testing.assert_allclose(other[0], one[0], atol=tol, rtol=0)
    np.testing.assert_array_equal(other[2], one[2])
    for k in one[1]:
      np.testing.assert_allclose(np.asarray(other[1][k]),
                                 np.asarray(one[1][k]), atol=tol, rtol=0)
  assert 0 < one[2].sum() < 24                   # some broken, some not


@pytest.mark.parametrize('name', ['apgd-t', 'apgd-ce'])
def test_retiring_stacked_rows_breaks_the_same_examples(name, digits_mlp,
                                                        monkeypatch):
  options = {} if name == 'apgd-t' else {'restarts': 4}
  with loops.retire_as(2):
    one = _run(name, digits_mlp, 1, monkeypatch, eps=0.05, **options)
    stacked = _run(name, digits_mlp, 128, monkeypatch, eps=0.05, **options)
  plain = _run(name, digits_mlp, 128, monkeypatch, eps=0.05, **options)
  np.testing.assert_array_equal(stacked[2], one[2])
  np.testing.assert_array_equal(stacked[2], plain[2])
  assert 0 < plain[2].sum() < 24
  _, _, x, _ = digits_mlp
  assert np.abs(stacked[0] - np.asarray(x[:24])).max() <= 0.05 + 1e-6


def test_an_example_found_by_one_stacked_row_is_decided_in_all():
  jnp = jax.numpy
  example = passes.example_ids(3, 4)                     # 3 passes x 4
  found = jnp.zeros(12, bool).at[jnp.asarray([5, 3])].set(True)
  correct = jnp.asarray([True, True, True, False] * 3)
  prior = jnp.zeros(12, bool).at[2].set(True)            # pass 0, ex. 2
  s = dict(example=example, found=found, correct=correct, prior=prior)
  got = np.asarray(apgd._decided(s))   # pylint: disable=protected-access
  # example 1 found in pass 1 (row 5): rows 1, 5, 9; example 3 is
  # misclassified clean (row 3 found, not correct): not decided; row 2's
  # prior only decides row 2 (prior is per row, from earlier groups).
  np.testing.assert_array_equal(
      got, [False, True, True, False, False, True, False, False,
            False, True, False, False])
