"""Recoverable search failures: the candidate's fault or the environment's."""

import concurrent.futures
import json
import os
import shutil

import ml_collections
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


def _config(num_trials):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = ml_collections.ConfigDict({'name': 'synthetic', 'options': {}})
  c.model = ml_collections.ConfigDict({'name': 'bowl', 'kwargs': {}})
  c.train = ml_collections.ConfigDict({'epochs': 1})
  c.search = ml_collections.ConfigDict({
      'weights': dict(synthetic.ERROR_ONLY), 'weight_spread': 0.0,
      'n_initial_points': 3, 'n_acq_points': 200, 'num_trials': num_trials,
      'batch_size': 1, 'board': ''})
  return c


def test_all_failed_for_missing_data_exits_then_resumes(tmp_path):
  wd = str(tmp_path / 'search')
  marker = str(tmp_path / 'data.npz')
  fn = NeedsData(marker)
  space = fn.bowl.space()
  with pytest.raises(failures.SearchFailedError) as err:
    search.run_search(_config(4), wd, evaluate_fn=fn, space=space)
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
  summary = search.run_search(_config(4), wd, evaluate_fn=fn2, space=space)
  assert sorted(fn2.calls) == sorted(failed)
  results = journal_lib.Journal(wd).replay().results
  assert [r['status'] for r in results] == ['ok'] * 4
  assert {r['trial']: r['params'] for r in results} == failed
  assert summary['best_trial'] is not None
  assert summary['status_counts'] == {'ok': 4, 'infeasible': 0, 'failed': 0}
  # A third run replays everything and trains nothing.
  fn3 = NeedsData(marker)
  search.run_search(_config(4), wd, evaluate_fn=fn3, space=space)
  assert fn3.calls == []


def test_candidate_failures_are_replayed_not_retried(tmp_path):
  wd = str(tmp_path / 'search')
  marker = str(tmp_path / 'data.npz')
  open(marker, 'w').close()
  fn = NeedsData(marker, odd_fails=True)
  space = fn.bowl.space()
  search.run_search(_config(6), wd, evaluate_fn=fn, space=space)
  results = journal_lib.Journal(wd).replay().results
  bad = [r for r in results if r['status'] == 'failed']
  assert bad and all(r['failure_kind'] == 'candidate' for r in bad)
  fn2 = NeedsData(marker, odd_fails=True)
  search.run_search(_config(6), wd, evaluate_fn=fn2, space=space)
  assert fn2.calls == []


def test_all_candidates_failed_is_an_error_counting_them(tmp_path):
  def nan(params, trial):
    del params, trial
    raise FloatingPointError('Training loss is nan at epoch 1.')

  space = synthetic.QuadraticBowl().space()
  with pytest.raises(failures.SearchFailedError,
                     match=r'3 failed \(candidate: FloatingPointError x3\)'):
    search.run_search(_config(3), str(tmp_path), evaluate_fn=nan, space=space)
  assert not os.path.exists(tmp_path / 'summary.json')


def test_real_search_without_data_then_with_it(tmp_path, shared_data_dir):
  """The real candidate evaluator on AURITUS from a data folder that is
  empty first: every trial fails for the environment, the search exits with
  an error; with the file in place the same command trains every trial."""
  data_dir = tmp_path / 'data'
  data_dir.mkdir()
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = ml_collections.ConfigDict({
      'name': 'auritus', 'augment': 'none',
      'options': {'data_dir': str(data_dir), 'source': 'local',
                  'channels': 'features'}})
  c.model = ml_collections.ConfigDict({'name': 'mlp', 'kwargs': {}})
  c.train = ml_collections.ConfigDict({
      'epochs': 1, 'batch_size': 64, 'learning_rate': 3e-3,
      'progress_bar': False})
  c.search = ml_collections.ConfigDict({
      'space': 'mlp', 'board': '', 'flash_max_bytes': 400e3,
      'sram_max_bytes': 64e3, 'flash_proxy': 'param_bytes',
      'sram_gate': 'study', 'precision': 'float32', 'num_trials': 2,
      'n_initial_points': 2, 'trial_epochs': 1, 'final_retrain': False,
      'precompile_attacks': False})
  c.attack = ml_collections.ConfigDict({'attacks': ['fgsm'], 'eps_grid': [0.1],
                                        'max_examples': 64})
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
