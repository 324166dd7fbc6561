"""Recoverable search failures: the candidate's fault or the environment's."""

import concurrent.futures
import json
import os
import shutil

import pytest

from tinyrobust.data import sources
from tinyrobust.nas import failures
from tinyrobust.nas import journal as journal_lib
from tinyrobust.nas import search
from tests.nas import synthetic


def test_failure_kinds():
  env = [sources.DataNotFoundError('no data'), MemoryError(),
         OSError('disk'), PermissionError('ro'),
         concurrent.futures.process.BrokenProcessPool('worker died'),
         RuntimeError('RESOURCE_EXHAUSTED: Out of memory allocating 4 GB')]
  cand = [FloatingPointError('Training loss is nan'),
          ValueError('Cannot export to TFLite builtin ops'),
          TypeError('bad kwarg')]
  assert [failures.failure_kind(e) for e in env] == ['environment'] * 6
  assert [failures.failure_kind(e) for e in cand] == ['candidate'] * 3
  # Journals from before the field: the kind comes from the error text.
  old = {'status': 'failed', 'error': 'DataNotFoundError: No data for ...'}
  assert failures.record_kind(old) == 'environment'
  assert failures.record_kind({'status': 'failed', 'error':
                               'FloatingPointError: nan'}) == 'candidate'
  assert failures.record_kind({'status': 'ok'}) is None


class NeedsData:
  """The bowl, which raises DataNotFoundError until `marker` exists, and a
  candidate failure (a NaN loss) for odd `k`."""

  def __init__(self, marker, odd_fails=False):
    self.marker, self.odd_fails, self.calls = marker, odd_fails, []
    self.bowl = synthetic.QuadraticBowl()

  def __call__(self, params, trial):
    self.calls.append(trial)
    if not os.path.exists(self.marker):
      raise sources.DataNotFoundError(f'No data: {self.marker} is missing.')
    if self.odd_fails and int(params['k']) % 2:
      raise FloatingPointError('Training loss is nan at epoch 1.')
    return self.bowl(params, trial)


def bowl_config(num_trials):
  """The bowl's search, one trial at a time (`synthetic.bowl_config`)."""
  return synthetic.bowl_config(num_trials=num_trials, n_acq_points=200,
                               batch_size=1)


def test_all_failed_for_missing_data_exits_then_resumes(tmp_path):
  wd = str(tmp_path / 'search')
  marker = str(tmp_path / 'data.npz')
  fn = NeedsData(marker)
  space = fn.bowl.space()
  with pytest.raises(failures.SearchFailedError) as err:
    search.run_search(bowl_config(4), wd, evaluate_fn=fn, space=space)
  msg = str(err.value)
  assert '4 failed (environment: DataNotFoundError x4)' in msg
  assert 'retried when the same command is run again' in msg
  assert 'data.npz is missing' in msg  # the first error, quoted
  assert not os.path.exists(os.path.join(wd, 'summary.json'))
  first = journal_lib.Journal(wd).read()
  failed = {r['trial']: r['params'] for r in first
            if r.get('event') == 'result'}
  assert len(failed) == 4 and all(
      r['failure_kind'] == 'environment' for r in first
      if r.get('event') == 'result')
  # The data arrives: the same trials run again (same parameters) and train.
  open(marker, 'w').close()
  fn2 = NeedsData(marker)
  summary = search.run_search(bowl_config(4), wd, evaluate_fn=fn2, space=space)
  assert sorted(fn2.calls) == sorted(failed)
  results = journal_lib.Journal(wd).replay().results
  assert [r['status'] for r in results] == ['ok'] * 4
  assert {r['trial']: r['params'] for r in results} == failed
  assert summary['best_trial'] is not None
  assert summary['status_counts'] == {'ok': 4, 'infeasible': 0, 'failed': 0}
  # A third run replays everything and trains nothing.
  fn3 = NeedsData(marker)
  search.run_search(bowl_config(4), wd, evaluate_fn=fn3, space=space)
  assert fn3.calls == []


def test_candidate_failures_are_replayed_not_retried(tmp_path):
  wd = str(tmp_path / 'search')
  marker = str(tmp_path / 'data.npz')
  open(marker, 'w').close()
  fn = NeedsData(marker, odd_fails=True)
  space = fn.bowl.space()
  search.run_search(bowl_config(6), wd, evaluate_fn=fn, space=space)
  results = journal_lib.Journal(wd).replay().results
  bad = [r for r in results if r['status'] == 'failed']
  assert bad and all(r['failure_kind'] == 'candidate' for r in bad)
  fn2 = NeedsData(marker, odd_fails=True)
  search.run_search(bowl_config(6), wd, evaluate_fn=fn2, space=space)
  assert fn2.calls == []


def test_all_candidates_failed_is_an_error_counting_them(tmp_path):
  def nan(params, trial):
    del params, trial
    raise FloatingPointError('Training loss is nan at epoch 1.')

  space = synthetic.QuadraticBowl().space()
  with pytest.raises(failures.SearchFailedError,
                     match=r'3 failed \(candidate: FloatingPointError x3\)'):
    search.run_search(bowl_config(3), str(tmp_path), evaluate_fn=nan, space=space)
  assert not os.path.exists(tmp_path / 'summary.json')


def test_real_search_without_data_then_with_it(tmp_path, shared_data_dir):
  """The real candidate evaluator on AURITUS from a data folder that is
  empty first: every trial fails for the environment, the search exits with
  an error; with the file in place the same command trains every trial."""
  data_dir = tmp_path / 'data'
  data_dir.mkdir()
  c = synthetic.mlp_search_config(
      data={'name': 'auritus', 'augment': 'none',
            'options': {'data_dir': str(data_dir), 'source': 'local',
                        'channels': 'features'}},
      train={'epochs': 1, 'batch_size': 64}, attack={'max_examples': 64})
  wd = str(tmp_path / 'search')
  with pytest.raises(failures.SearchFailedError,
                     match=r'2 failed \(environment: DataNotFoundError x2\)'):
    search.run_search(c, wd)
  shutil.copy(os.path.join(shared_data_dir, 'auritus_activity.npz'), data_dir)
  summary = search.run_search(c, wd)
  results = journal_lib.Journal(wd).replay().results
  assert [r['status'] for r in results] == ['ok', 'ok'], [
      r.get('error') for r in results]
  assert summary['best_trial'] is not None
  lines = [json.loads(l) for l in open(os.path.join(wd, 'trials.jsonl'))]
  assert sum(l['event'] == 'result' for l in lines) == 4  # 2 failed + 2 ok
