"""Misuse sweep, journals: journals after a kill: torn trials and metrics
lines, a kill between a checkpoint and its line, garbage, and a finished run
run again.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from typing import Callable

import ml_collections
import pytest
from skopt import space as sk

from tests.misuse import sweep

Case, Verdict, pkg = sweep.Case, sweep.Verdict, sweep.pkg

_ERROR_ONLY = {'error': 1.0, 'flash': 0.0, 'sram': 0.0, 'latency': 0.0,
               'adversarial': 0.0}


def _bowl_space():
  spaces = pkg('tinyrobust.nas.spaces')
  return spaces.SearchSpace('bowl', 'none', (sk.Real(-5.0, 5.0, name='x0'),
                                             sk.Integer(0, 20, name='k')))


def _bowl(params, trial):
  """An analytic candidate (no training): error = (x0 - 1)^2 + k / 20."""
  del trial
  objective = pkg('tinyrobust.nas.objective')
  terms = objective.terms(val_accuracy=None, flash_bytes=1000.0,
                          sram_bytes=1000.0, flops=0.0, fgsm_consistency=None,
                          flash_max=1e9, sram_max=1e9)
  terms['error'] = (float(params['x0']) - 1.0) ** 2 + int(params['k']) / 20
  terms['adversarial_error'] = 0.0
  return {'status': 'ok', 'terms': terms, 'metrics': {'value': terms['error']}}


def _torn_trials(ctx) -> Verdict:
  """Cut the journal's last line to 40 characters, then resume twice."""
  nas = pkg('tinyrobust.nas')
  journal_lib = pkg('tinyrobust.nas.journal')
  d = ctx.path('torn_search')
  c = ml_collections.ConfigDict({
      'seed': 0, 'data': {'name': 'synthetic', 'options': {}},
      'model': {'name': 'bowl', 'kwargs': {}}, 'train': {'epochs': 1},
      'search': {'weights': dict(_ERROR_ONLY), 'weight_spread': 0.0,
                 'n_initial_points': 3, 'n_acq_points': 200,
                 'num_trials': 4, 'batch_size': 1, 'board': ''}})
  space = _bowl_space()
  nas.run_search(c, d, evaluate_fn=_bowl, space=space)
  path = os.path.join(d, journal_lib.FILENAME)
  with open(path) as f:
    lines = f.read().splitlines()
  with open(path, 'w') as f:
    f.write('\n'.join(lines[:-1] + [lines[-1][:40]]))
  try:
    for n in (6, 8):
      c.search.num_trials = n
      nas.run_search(c, d, evaluate_fn=_bowl, space=space)
    with open(path) as f:
      for i, line in enumerate(f.read().splitlines()):
        json.loads(line)
    results = journal_lib.Journal(d).replay().results
  except Exception as err:  # pylint: disable=broad-except
    return Verdict('loss', f'journal unusable: {type(err).__name__}: {err}'
                   [:300])
  if sorted(r['trial'] for r in results) != list(range(8)):
    return Verdict('loss', f'trials {[r["trial"] for r in results]}')
  torn = os.path.exists(path + '.torn')
  return Verdict('clear', 'resumed twice, valid JSONL'
                 + ('; fragment kept in .torn' if torn else ''))


@functools.lru_cache(maxsize=None)
def _two_epoch_run(root: str) -> str:
  """A finished 2-epoch digits run to copy (trained once per sweep)."""
  train = pkg('tinyrobust.train')
  digits_cnn = sweep.digits_config_module()
  c = digits_cnn.get_config('quick')
  c.train.epochs = 2
  c.train.progress_bar = False
  c.model.kwargs.features = (4, 8)
  d = os.path.join(root, 'two_epoch_run')
  train.train_and_evaluate(c, d)
  return d


def _metrics_lines(d: str) -> list[str]:
  with open(os.path.join(d, 'metrics.jsonl')) as f:
    return f.read().splitlines()


def _write_lines(d: str, lines: list[str], tail: str = '\n') -> None:
  with open(os.path.join(d, 'metrics.jsonl'), 'w') as f:
    f.write('\n'.join(lines) + tail)


def _restart_and_check(ctx, damage: Callable[[str, list[str]], None]
                       ) -> Verdict:
  """Copies the 2-epoch run, damages it as a kill would, restarts it."""
  d = ctx.path('killed_run')
  shutil.copytree(_two_epoch_run(ctx.root), d)
  lines = _metrics_lines(d)
  body = [l for l in lines if '"final"' not in l]
  os.remove(os.path.join(d, 'final_metrics.json'))
  damage(d, body)
  c = ctx.config(epochs=2)
  try:
    ctx.train(d, c)
  except (ValueError, TypeError) as err:
    if 'metrics.jsonl' in str(err) and 'line' in str(err):
      return Verdict('clear', f'refused, naming the line: {err}'[:300])
    return Verdict('unclear', f'{type(err).__name__}: {err}'[:300])
  try:
    records = [json.loads(l) for l in _metrics_lines(d) if l.strip()]
  except json.JSONDecodeError as err:
    return Verdict('loss', f'metrics.jsonl left invalid: {err}')
  epochs = [r.get('epoch') for r in records if not r.get('final')]
  finals = sum(1 for r in records if r.get('final'))
  if sorted(e for e in epochs if e is not None) != [1, 2] or finals != 1:
    return Verdict('loss', f'epoch records {epochs}, final records {finals}')
  return Verdict('clear', 'every epoch record once, one final record')


def _kill_after_ckpt(d, body):
  _write_lines(d, body[:-1])  # epoch 2's line never written


def _torn_metrics(d, body):
  _write_lines(d, body[:-1] + [body[-1][:40]], tail='')


def _garbage_metrics(d, body):
  _write_lines(d, body[:1] + ['this is not json'] + body[1:])


def _finished_rerun(ctx) -> Verdict:
  d = ctx.path('rerun')
  shutil.copytree(_two_epoch_run(ctx.root), d)
  ctx.train(d, ctx.config(epochs=2))
  finals = sum(1 for l in _metrics_lines(d) if '"final"' in l)
  if finals != 1:
    return Verdict('silent', f'{finals} final records after a re-run')
  return Verdict('clear', 're-run appended nothing')


def _journal_cases() -> list[Case]:
  g = 'journals'
  return [
      Case('torn_trials_resume_twice', g, _torn_trials),
      Case('kill_between_checkpoint_and_metrics', g,
           lambda c: _restart_and_check(c, _kill_after_ckpt)),
      Case('torn_metrics_then_restart', g,
           lambda c: _restart_and_check(c, _torn_metrics)),
      Case('garbage_in_metrics_then_restart', g,
           lambda c: _restart_and_check(c, _garbage_metrics)),
      Case('finished_run_rerun', g, _finished_rerun),
  ]


CASES = _journal_cases()


@pytest.mark.parametrize('case', CASES, ids=sweep.ids(CASES))
def test_journals_misuse(case, misuse_ctx):
  sweep.check(case, misuse_ctx)
