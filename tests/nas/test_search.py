"""run_search with injected analytic candidates: resume, failures, executors."""

import json
import os

import pytest

from tinyrobust.nas import journal as journal_lib
from tinyrobust.nas import search
from tests.nas import synthetic


_config = synthetic.bowl_config


class Counting:
  """The bowl, counting calls; raises KeyboardInterrupt at call `kill_at`."""

  def __init__(self, bowl, kill_at=None):
    self.bowl, self.kill_at, self.calls = bowl, kill_at, []

  def __call__(self, params, trial):
    if self.kill_at is not None and len(self.calls) == self.kill_at:
      raise KeyboardInterrupt('simulated kill')
    self.calls.append(trial)
    return self.bowl(params, trial)


def _results(workdir):
  return [(r['trial'], r['status'], json.dumps(r['params'], sort_keys=True),
           json.dumps(r['terms'], sort_keys=True))
          for r in journal_lib.Journal(workdir).replay().results]


def test_resume_after_kill_reruns_nothing(tmp_path):
  bowl = synthetic.QuadraticBowl()
  space = bowl.space()
  killed, clean = str(tmp_path / 'killed'), str(tmp_path / 'clean')
  first = Counting(bowl, kill_at=5)
  with pytest.raises(KeyboardInterrupt):
    search.run_search(_config(), killed, evaluate_fn=first, space=space)
  assert first.calls == [0, 1, 2, 3, 4]
  rep = journal_lib.Journal(killed).replay()
  assert len(rep.results) == 5 and [p['trial'] for p in rep.pending] == [5]

  second = Counting(bowl)
  summary = search.run_search(_config(), killed, evaluate_fn=second,
                              space=space)
  assert second.calls == [5, 6, 7]  # only the unfinished and new trials
  assert summary['trials'] == 8

  # Same trials as a search that was never interrupted.
  search.run_search(_config(), clean, evaluate_fn=Counting(bowl), space=space)
  assert _results(killed) == _results(clean)

  third = Counting(bowl)
  search.run_search(_config(), killed, evaluate_fn=third, space=space)
  assert third.calls == []  # a finished search re-runs nothing
  fourth = Counting(bowl)
  search.run_search(_config(num_trials=10), killed, evaluate_fn=fourth,
                    space=space)
  assert fourth.calls == [8, 9]  # extending the budget runs only new ones

  with pytest.raises(ValueError, match='search.kappa'):
    search.run_search(_config(kappa=3.0), killed, evaluate_fn=Counting(bowl),
                      space=space)


def test_failed_candidates_are_recorded_and_search_continues(tmp_path):
  bowl = synthetic.QuadraticBowl()

  def flaky(params, trial):
    if int(params['k']) % 2:
      raise ValueError(f'Cannot export to TFLite builtin ops (k={params["k"]})')
    return bowl(params, trial)

  summary = search.run_search(_config(num_trials=8), str(tmp_path),
                              evaluate_fn=flaky, space=bowl.space())
  results = journal_lib.Journal(str(tmp_path)).replay().results
  failed = [r for r in results if r['status'] == 'failed']
  assert len(results) == 8 and failed
  assert all('Cannot export' in r['error'] for r in failed)
  assert summary['status_counts']['failed'] == len(failed)
  assert summary['best_trial']['params']['k'] % 2 == 0
  assert os.path.exists(tmp_path / 'summary.json')


def _sequential_and(executor: dict, bowl, tmp_path, **cfg):
  """The journal results of the same search run sequentially and with
  `executor` (search fields)."""
  out = []
  for name, extra in (('seq', {}), ('other', executor)):
    search.run_search(_config(**extra, **cfg), str(tmp_path / name),
                      evaluate_fn=bowl, space=bowl.space())
    out.append(_results(str(tmp_path / name)))
  return out


def test_ray_executor_matches_sequential(tmp_path):
  pytest.importorskip('ray')
  bowl = synthetic.QuadraticBowl(bytes_per_k=1000.0, flash_max=15000.0)
  seq, ray = _sequential_and(dict(executor='ray', num_workers=1), bowl,
                             tmp_path, num_trials=6, batch_size=2,
                             n_initial_points=2)
  assert len(seq) == 6 and seq == ray


def test_bad_search_config_fails_fast(tmp_path):
  bowl = synthetic.QuadraticBowl()
  for field, value, match in (('executor', 'dask', 'executor'),
                              ('sram_gate', 'peak', 'sram_gate'),
                              ('num_trials', 0, 'num_trials')):
    with pytest.raises(ValueError, match=match):
      search.run_search(_config(**{field: value}), str(tmp_path),
                        evaluate_fn=bowl, space=bowl.space())
  assert not os.path.exists(tmp_path / 'trials.jsonl')


def test_process_pool_executor_matches_sequential(tmp_path):
  seq, pool = _sequential_and(dict(executor='process', num_workers=2),
                              synthetic.QuadraticBowl(), tmp_path,
                              num_trials=4, batch_size=2, n_initial_points=2)
  assert seq == pool
