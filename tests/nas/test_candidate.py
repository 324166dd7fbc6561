"""Real candidates on built-in data: the hardware gate and a tiny search."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from tinyrobust import models
from tinyrobust.nas import candidate
from tinyrobust.nas import costs
from tinyrobust.nas import failures
from tinyrobust.nas import journal as journal_lib
from tinyrobust.nas import search
from tinyrobust.nas import spaces
from tests.nas import synthetic


def _config(attack=None, **search_overrides):
  c = synthetic.mlp_search_config(
      attack={'attacks': ['fgsm', 'pgd'], 'pgd_steps': 2, **(attack or {})},
      **{'flash_max_bytes': 120e3, 'num_trials': 6, 'n_initial_points': 6,
         'precompile_attacks': True, **search_overrides})
  c.model.num_classes = ml_collections.config_dict.placeholder(int)
  return c


def test_infeasible_candidates_are_never_trained(tmp_path):
  trained = []

  def spy_train(cfg, workdir):
    del workdir
    trained.append(cfg.model.kwargs.to_dict())
    model = models.get_model(cfg.model.name, 4, **cfg.model.kwargs.to_dict())
    variables = model.init(jax.random.key(0), jnp.zeros((1, 100, 6)))
    return {'val_accuracy': 0.5, 'test_accuracy': 0.5}, variables

  config = search.resolve_config(_config(attack={'attacks': ['fgsm']}))
  space = spaces.get_space('mlp')
  budget = costs.board_budget('', flash_max_bytes=120e3, sram_max_bytes=64e3)
  evaluator = candidate.CandidateEvaluator(config, str(tmp_path), space,
                                           budget, train_fn=spy_train)
  search.run_search(config, str(tmp_path), evaluate_fn=evaluator, space=space)
  results = journal_lib.Journal(str(tmp_path)).replay().results
  infeasible = [r for r in results if r['status'] == 'infeasible']
  ok = [r for r in results if r['status'] == 'ok']
  assert infeasible and ok, [r['status'] for r in results]
  assert len(trained) == len(ok)
  trained_keys = [json.dumps(k, sort_keys=True) for k in trained]
  for r in infeasible:
    m = r['metrics']
    assert m['flash_bytes'] > 120e3 or m['sram_bytes'] > 64e3
    assert json.dumps(space.model_kwargs(r['params']),
                      sort_keys=True) not in trained_keys
    assert 'train_s' not in r['timings']
  for r in ok:
    assert r['metrics']['flash_bytes'] <= 120e3
    assert r['metrics']['sram_bytes'] <= 64e3
    assert 0.0 <= r['metrics']['val_fgsm_consistency'] <= 1.0
    assert 0.0 < r['timings']['adversarial_share'] < 1.0
    assert r['timings']['attack_compile_overlapped_s'] > 0  # while training


def test_tiny_end_to_end_search(tmp_path):
  workdir = str(tmp_path)
  summary = search.run_search(
      _config(num_trials=2, n_initial_points=2, flash_max_bytes=400e3,
              attack={'pgd_steps': 1}, final_retrain=True), workdir)
  results = journal_lib.Journal(workdir).replay().results
  assert len(results) == 2 and summary['trials'] == 2
  ok = [r for r in results if r['status'] == 'ok']
  assert ok
  for r in ok:
    t = r['terms']
    assert t['error'] == pytest.approx(1 - r['metrics']['val_accuracy'])
    assert t['adversarial_error'] == pytest.approx(
        1 - r['metrics']['val_fgsm_consistency'])
    assert t['flash_term'] == pytest.approx(
        -r['metrics']['flash_bytes'] / 400e3)
    assert r['versions']['jax'] and r['seed'] == 0
    assert os.path.exists(os.path.join(
        workdir, 'trials', f'trial_{r["trial"]:04d}', 'final_metrics.json'))
  final = summary['final']
  assert final['trial'] == summary['best_trial']['trial']
  assert final['epochs'] == 2
  for k in ('test_accuracy', 'test_fgsm_consistency', 'test_pgd_consistency',
            'test_pgd_robust_accuracy'):
    assert 0.0 <= final[k] <= 1.0
  for name in ('pareto.csv', 'pareto.png', 'summary.json', 'final.json'):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  assert summary['pareto']['size'] >= 1
  assert 0.0 < summary['adversarial_share']['mean'] < 1.0


def test_nan_model_trial_is_recorded_as_failed_with_the_reason(tmp_path):
  """A trained candidate whose logits are NaN is a failed trial, never a
  plausible robust accuracy (argmax(NaN) = 0 would count as a prediction)."""

  def nan_train(cfg, workdir):
    del workdir
    model = models.get_model(cfg.model.name, 4, **cfg.model.kwargs.to_dict())
    variables = model.init(jax.random.key(0), jnp.zeros((1, 100, 6)))
    variables = jax.tree_util.tree_map(lambda a: jnp.full_like(a, jnp.nan),
                                       variables)
    return {'val_accuracy': 0.25, 'test_accuracy': 0.25}, variables

  config = search.resolve_config(_config(attack={'attacks': ['fgsm']},
                                         num_trials=2, n_initial_points=2,
                                         flash_max_bytes=400e3))
  space = spaces.get_space('mlp')
  budget = costs.board_budget('', flash_max_bytes=400e3, sram_max_bytes=64e3)
  evaluator = candidate.CandidateEvaluator(config, str(tmp_path), space,
                                           budget, train_fn=nan_train)
  with pytest.raises(failures.SearchFailedError,
                     match='No trial of the search.*non-finite'):
    search.run_search(config, str(tmp_path), evaluate_fn=evaluator,
                      space=space)
  results = journal_lib.Journal(str(tmp_path)).replay().results
  trained = [r for r in results if r['status'] != 'infeasible']
  assert trained, [r['status'] for r in results]
  for r in trained:
    assert r['status'] == 'failed', r
    assert 'non-finite' in json.dumps(r), r
