"""Misuse sweep, workdirs (issue 23, second pass): what the first pass
(`test_concurrency.py`) left, and new cases found by trying in its spirit.

Clip ranges that exclude the data in the host-driven Square and the
universal perturbation; `evaluate_deployed` with mis-shaped calibration
inputs; a checkpoint of another architecture under --mode=profile;
`--restart` with attack/profile results beside the run; partial deletions
(config.json, best.ckpt, a damaged mode stamp); an attack while another
process trains the run; more mode mix-ups (profile on a search, a search
study on a study); a training whose data is missing (environment).
"""

from __future__ import annotations

import os

import pytest

from tests.misuse import sweep
from tests.misuse import test_concurrency as conc

Case, Verdict, pkg = sweep.Case, sweep.Verdict, sweep.pkg
# What --mode=attack and --mode=profile write into a trained run.
RESULTS = ('attack_results.json', 'attack_results.csv', 'results.jsonl',
           'profile.json')


def _other_arch_profile(ctx):
  """--mode=profile on a run whose config.json names another architecture."""
  d = conc.run_copy(ctx, 'other_arch_profile', conc.other_architecture)
  return pkg('tinyrobust.modes').run('profile', None, d)


def _square_host_clip(ctx):
  """The host-driven Square (e.g. scoring an int8 interpreter)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  x, y = ctx.xy()
  _, v, apply_fn = ctx.mlp()
  square = pkg('tinyrobust.attacks').make_square(
      lambda vv, xx: np.asarray(apply_fn(vv, xx)), host=True,
      clip=(2.0, 3.0), queries=2)
  x_adv = square(v, x, y, ctx.key(), 0.05)
  return f'linf distance {float(np.abs(np.asarray(x_adv) - x).max()):.3f}'


def _universal_clip(ctx):
  import numpy as np  # pylint: disable=g-import-not-at-top
  x, y = ctx.xy()
  uap = pkg('tinyrobust.attacks.universal').fit_universal(
      ctx.mlp()[2], ctx.mlp()[1], x, y, eps=0.05, clip=(2.0, 3.0), epochs=1)
  out = uap.apply(x)
  return f'linf distance {float(np.abs(out - x).max()):.3f}'


def _deployed_x_train(ctx):
  """evaluate_deployed with calibration inputs of another shape."""
  x, y = ctx.xy()
  model, v, _ = ctx.mlp()
  return pkg('tinyrobust.evaluation.deployed').evaluate_deployed(
      model, v, (x, y), x_train=x[:, :4], eps_grid=[0.1], attacks=['fgsm'])


def _restart_results(ctx):
  """--restart on a run that was attacked and profiled: no stale result
  may stay beside the new run."""
  def write_results(d):  # as --mode=attack/profile leave them
    for name in RESULTS:
      with open(os.path.join(d, name), 'w') as f:
        f.write('{"old": true}\n')

  d = conc.run_copy(ctx, 'restart_results', write_results)
  pkg('tinyrobust.modes').run('train', ctx.config(), d, restart=True)
  stale = [n for n in RESULTS if os.path.exists(os.path.join(d, n))]
  if stale:
    return Verdict('silent', f'{stale} of the old model stay beside the new '
                   'run')
  aside = [n for n in os.listdir(d) if n.startswith('replaced_')]
  return Verdict('clear', f'old results moved to {aside}')


def _config_deleted(ctx):
  """A finished run whose config.json was deleted, rerun with another."""
  d = conc.run_copy(ctx, 'config_deleted',
                    lambda d: os.remove(os.path.join(d, 'config.json')))
  try:
    pkg('tinyrobust.modes').run('train', ctx.config(features=(8, 16)), d)
  except ValueError as err:
    if os.path.exists(os.path.join(d, 'config.json')):
      return Verdict('unclear', f'refused but pinned the new config.json: '
                     f'{err}'[:300])
    if all(n in str(err) for n in ('config.json', '--restart')):
      return Verdict('clear', str(err)[:300])
    return Verdict('unclear', str(err)[:300])
  return Verdict('silent', 'resumed a run whose config is unknown')


def _attack_while_held(ctx):
  """--mode=attack on a run another process is still training."""
  d = conc.run_copy(ctx, 'attack_while_held')
  p = conc.holder_child(d, 'train')
  try:
    pkg('tinyrobust.modes').run('attack', ctx.attack_config(), d)
  except RuntimeError as err:
    ok = conc.BUSY in str(err) and f'PID {p.pid}' in str(err)
    return Verdict('clear' if ok else 'unclear', str(err)[:300])
  finally:
    p.kill()
    p.wait()
  return Verdict('silent', 'attacked a run while it was being trained')


def _stamp_damaged(ctx):
  d = conc.run_copy(ctx, 'stamp_damaged',
                    conc.write_file('run_mode.json', '{}'))
  return pkg('tinyrobust.modes').run('train', ctx.config(), d)


def _deleted_best(ctx):
  d = conc.run_copy(ctx, 'deleted_best',
                    lambda d: os.remove(os.path.join(d, 'best.ckpt')))
  return pkg('tinyrobust.modes').run('attack', ctx.attack_config(), d)


def _search_dir(ctx):
  d = ctx.path('search_dir')
  os.makedirs(d)
  open(os.path.join(d, 'trials.jsonl'), 'w').close()
  return d


def _train_no_data(ctx):
  """--mode=train on AURITUS from an empty data folder: the error names
  where it looked, and the new workdir is not claimed."""
  c = ctx.config()
  c.data.name = 'auritus'
  c.data.options = {'data_dir': ctx.path('empty_data'), 'source': 'local',
                    'channels': 'features'}
  os.makedirs(c.data.options.data_dir)
  c.model.name, c.model.kwargs = 'mlp', {}
  wd = ctx.path('train_no_data')
  try:
    pkg('tinyrobust.modes').run('train', c, wd)
  except FileNotFoundError as err:
    if os.path.exists(wd):
      return Verdict('unclear', f'the failed run left {os.listdir(wd)}')
    ok = c.data.options.data_dir in str(err)
    return Verdict('clear' if ok else 'unclear', f'{type(err).__name__}: '
                   f'{err}'[:300])
  return Verdict('silent', 'trained without its data')


def _workdir_cases() -> list[Case]:
  g = 'workdirs'
  return [
      Case('profile_variables_of_other_architecture', g,
           _other_arch_profile,
           ('best.ckpt', 'config.json', 'another architecture')),
      Case('square_host_clip_excludes_data', g, _square_host_clip,
           ('(2, 3)', 'min')),
      Case('universal_clip_excludes_data', g, _universal_clip,
           ('(2, 3)', 'min')),
      Case('deployed_x_train_misshaped', g, _deployed_x_train,
           ('x_train', '[N, 8, 8, 1]'), late_s=20.0),
      Case('restart_moves_attack_profile_results', g, _restart_results),
      Case('config_json_deleted_then_train', g, _config_deleted),
      Case('attack_while_training_holds_lock', g, _attack_while_held),
      Case('stamp_damaged', g, _stamp_damaged, ('run_mode.json', 'damaged')),
      Case('deleted_best_ckpt_then_attack', g, _deleted_best,
           ('best.ckpt', 'missing')),
      Case('profile_on_search_workdir', g, conc._mode_on(
          'profile', lambda c: None, _search_dir,
          ('architecture search', '--mode=profile'))),
      Case('search_study_on_study_workdir', g, conc._mode_on(
          'search_study', lambda c: c.config(), conc._study_dir,
          ('robustness study', '--mode=search_study'))),
      Case('train_data_missing_environment', g, _train_no_data),
  ]


CASES = _workdir_cases()


@pytest.mark.parametrize('case', CASES, ids=sweep.ids(CASES))
def test_workdirs_misuse(case, misuse_ctx):
  sweep.check(case, misuse_ctx)
