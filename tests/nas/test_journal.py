"""trials.jsonl: round trip, torn lines, replay of pending suggestions."""

import json
import math
import os

import pytest

from tinyrobust.nas import journal as journal_lib


def test_round_trip_and_replay(tmp_path):
  j = journal_lib.Journal(str(tmp_path))
  params = {'nb_filters': 8, 'gamma': 0.25}
  weights = {'error': 1.0, 'flash': 0.01, 'sram': 0.01, 'latency': 0.05,
             'adversarial': 0.5}
  terms = {'error': 0.2, 'flash_term': math.inf, 'sram_term': -0.5,
           'latency_term': 0.1, 'adversarial_error': math.nan}
  j.suggest(0, params, weights, batch=0)
  j.suggest(1, {'nb_filters': 9, 'gamma': 1.0}, weights, batch=0)
  written = j.result({'trial': 0, 'params': params, 'weights': weights,
                      'status': 'infeasible', 'terms': terms,
                      'metrics': {'flash_bytes': 600000},
                      'timings': {'cost_s': 1.5}, 'seed': 3})
  assert written['versions']['numpy']
  rep = j.replay()
  assert [r['trial'] for r in rep.results] == [0]
  assert [p['trial'] for p in rep.pending] == [1]
  assert rep.next_trial == 2
  r = rep.results[0]
  assert r['params'] == params and r['weights'] == weights
  assert r['status'] == 'infeasible' and r['seed'] == 3
  assert r['metrics'] == {'flash_bytes': 600000}
  assert r['terms']['flash_term'] == math.inf
  assert math.isnan(r['terms']['adversarial_error'])
  assert r['terms']['sram_term'] == -0.5
  assert r['versions'] == written['versions']


def test_torn_last_line_is_ignored(tmp_path):
  j = journal_lib.Journal(str(tmp_path))
  j.result({'trial': 0, 'params': {'a': 1}, 'status': 'ok',
            'terms': {'error': 0.1}})
  with open(os.path.join(tmp_path, journal_lib.FILENAME), 'a') as f:
    f.write('{"event": "result", "trial": 1, "par')  # killed mid-write
  rep = j.replay()
  assert [r['trial'] for r in rep.results] == [0]


def _result(j, trial):
  return j.result({'trial': trial, 'params': {'nb_filters': 8 + trial},
                   'status': 'ok', 'terms': {'error': 0.1 * trial},
                   'metrics': {'flash_bytes': 1000 + trial}})


def test_torn_tail_resumes_twice_cleanly(tmp_path):
  # A kill during an append leaves a torn last line. Each resume (replay
  # then appends) must keep the journal valid JSONL; the fragment is kept
  # in trials.jsonl.torn.
  j = journal_lib.Journal(str(tmp_path))
  for t in range(3):
    j.suggest(t, {'nb_filters': 8 + t}, None, batch=0)
    _result(j, t)
  path = os.path.join(tmp_path, journal_lib.FILENAME)
  with open(path) as f:
    lines = f.read().splitlines()
  fragment = lines[-1][:40]
  with open(path, 'w') as f:
    f.write('\n'.join(lines[:-1] + [fragment]))
  for resume in range(2):
    rep = journal_lib.Journal(str(tmp_path)).replay()
    assert [r['trial'] for r in rep.results] == list(range(2 + resume))
    assert [p['trial'] for p in rep.pending] == ([2] if resume == 0 else [])
    j = journal_lib.Journal(str(tmp_path))
    if resume == 0:
      _result(j, 2)  # the resumed search finishes the pending trial
    else:
      j.suggest(3, {'nb_filters': 11}, None, batch=1)
      _result(j, 3)
    with open(path) as f:
      text = f.read()
    assert text.endswith('\n')
    assert all(json.loads(line) for line in text.splitlines())
  rep = journal_lib.Journal(str(tmp_path)).replay()
  assert [r['trial'] for r in rep.results] == [0, 1, 2, 3] and not rep.pending
  with open(path + '.torn') as f:
    assert f.read() == fragment + '\n'


def test_damaged_middle_line_names_file_and_line(tmp_path):
  j = journal_lib.Journal(str(tmp_path))
  _result(j, 0)
  path = os.path.join(tmp_path, journal_lib.FILENAME)
  with open(path, 'a') as f:
    f.write('{"event": "result", "tri\n')
  _result(j, 1)
  with pytest.raises(ValueError, match=r'trials\.jsonl.*line 2'):
    j.replay()


def test_bad_status_raises(tmp_path):
  j = journal_lib.Journal(str(tmp_path))
  with pytest.raises(ValueError, match='status'):
    j.result({'trial': 0, 'params': {}, 'status': 'done'})
