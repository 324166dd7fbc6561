"""Misuse sweep, cli: the run modes and `experiments/main.py`: configs that
differ from the run, unfinished runs, bad training configs, resumes, and the
command line (in a subprocess).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.misuse import sweep

Case, Verdict, pkg = sweep.Case, sweep.Verdict, sweep.pkg


def _mode(mode: str, make_config=None, workdir=None):
  def fn(ctx):
    modes = pkg('tinyrobust.modes')
    cfg = make_config(ctx) if make_config else None
    return modes.run(mode, cfg, workdir(ctx) if workdir else ctx.run_dir())
  return fn


def _seed1(ctx):
  c = ctx.attack_config()
  c.data.options.seed = 1
  return c


def _wider(ctx):
  c = ctx.config(features=(8, 16))
  c.hardware = {'measure': False}
  return c


def _copy_run(ctx, name: str) -> str:
  d = ctx.path(name)
  shutil.copytree(ctx.run_dir(), d)
  return d


def _attack_unfinished(ctx):
  modes = pkg('tinyrobust.modes')
  d = _copy_run(ctx, 'unfinished')
  os.remove(os.path.join(d, 'final_metrics.json'))
  res = modes.run('attack', ctx.attack_config(), d)
  if (res.get('run') or {}).get('training_finished') is False:
    return Verdict('clear', 'results say training_finished=False')
  return Verdict('silent', 'unfinished run attacked without a note')


def _file_workdir(ctx):
  p = ctx.path('workdir_file')
  with open(p, 'w') as f:
    f.write('not a folder')
  return p


def _bad_train_config(edit, needle: str, *, fix_and_rerun: bool = False):
  """The error must come before the workdir is touched (or be replaceable)."""
  def fn(ctx):
    d = ctx.path('bad_config')
    c = ctx.config()
    edit(c)
    try:
      ctx.train(d, c)
    except (ValueError, TypeError) as err:
      msg = str(err)
    except Exception as err:  # pylint: disable=broad-except
      return Verdict('unclear', f'{type(err).__name__}: {err}'[:300])
    else:
      return Verdict('silent', 'bad config trained')
    if needle.lower() not in msg.lower():
      return Verdict('unclear', f'message misses {needle!r}: {msg[:250]}')
    wrote = os.path.exists(os.path.join(d, 'config.json'))
    if fix_and_rerun:
      try:
        ctx.train(d, ctx.config())
      except Exception as err:  # pylint: disable=broad-except
        return Verdict('unclear', f'corrected command refused: {err}'[:300])
      return Verdict('clear', f'{msg[:150]}; corrected run accepted')
    if wrote:
      return Verdict('unclear', f'config.json written before failing: '
                     f'{msg[:200]}')
    return Verdict('clear', msg[:300])
  return fn


def _set(path: str, value):
  def edit(c):
    *parents, leaf = path.split('.')
    node = c
    for p in parents:
      node = node[p]
    with node.ignore_type():
      node[leaf] = value
  return edit


def _resume_changed(path: str, value):
  def fn(ctx):
    d = _copy_run(ctx, 'resume_changed')
    c = ctx.config()
    _set(path, value)(c)
    return ctx.train(d, c)
  return fn


def _other_architecture_ckpt(ctx):
  d = ctx.path('other_arch')
  os.makedirs(d)
  for name in ('latest.ckpt', 'best.ckpt'):
    shutil.copy(os.path.join(ctx.run_dir(), name), d)
  return ctx.train(d, ctx.config(features=(8, 16)))


def _main(args: list[str], needles: tuple[str, ...] = (), *,
          valid: bool = False, env_extra: dict | None = None):
  def fn(ctx):
    del ctx
    env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3', 'JAX_PLATFORMS': 'cpu',
           **(env_extra or {})}
    r = subprocess.run([sys.executable, '-m', 'experiments.main', *args],
                       cwd=sweep.REPO, capture_output=True, text=True,
                       timeout=600, env=env)
    text = (r.stderr + r.stdout)
    tail = ' | '.join(text.strip().splitlines()[-2:])[:300]
    if r.returncode == 0:
      return Verdict('clear' if valid else 'silent', f'exit 0: {tail}')
    if valid:
      return Verdict('unclear', f'valid command failed: {tail}')
    if all(n.lower() in text.lower() for n in needles):
      return Verdict('clear', f'exit {r.returncode}: {tail}')
    return Verdict('unclear', f'exit {r.returncode}, misses {needles}: {tail}')
  return fn


def _readme_not_a_study(ctx):
  """`readme_results` on a folder that is not a finished study: a clear
  error naming summary.json, and the README (a copy) untouched."""
  readme = ctx.path('README.md')
  shutil.copy(os.path.join(sweep.REPO, 'README.md'), readme)
  before = open(readme).read()
  os.makedirs(ctx.path('not_a_study'), exist_ok=True)
  env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3', 'JAX_PLATFORMS': 'cpu'}
  r = subprocess.run(
      [sys.executable, '-m', 'experiments.readme_results',
       f'--workdirs={ctx.path("not_a_study")}', f'--readme={readme}'],
      cwd=sweep.REPO, capture_output=True, text=True, timeout=300, env=env)
  text = r.stderr + r.stdout
  tail = ' | '.join(text.strip().splitlines()[-2:])[:300]
  if open(readme).read() != before:
    return Verdict('loss', f'README changed: {tail}')
  if r.returncode == 0:
    return Verdict('silent', f'exit 0: {tail}')
  if 'summary.json' in text and 'not_a_study' in text:
    return Verdict('clear', f'exit {r.returncode}: {tail}')
  return Verdict('unclear', f'exit {r.returncode}: {tail}')


def _cli_cases() -> list[Case]:
  g = 'cli'
  attack_overrides = [
      '--config.model.kwargs.features=(4,8)', '--config.train.epochs=1',
      '--config.train.progress_bar=False',
      '--config.attack.eps_grid=(0.0,0.05)', '--config.attack.pgd_steps=2',
      '--config.attack.max_examples=40']
  return [
      Case('attack_config_differs_from_run', g, _mode('attack', _seed1),
           ('data.options.seed',)),
      Case('profile_config_differs_from_run', g, _mode('profile', _wider),
           ('model.kwargs.features',)),
      Case('attack_unfinished_run', g, _attack_unfinished),
      Case('attack_workdir_is_file', g, _mode(
          'attack', lambda c: c.attack_config(), _file_workdir),
           ('workdir_file',)),
      Case('train_workdir_is_file', g, _mode(
          'train', lambda c: c.config(), _file_workdir), ('workdir_file',),
           late_s=5.0),
      Case('attack_no_run', g, _mode(
          'attack', None, lambda c: c.path('empty_run')), ('config.json',)),
      Case('train_bad_optimizer_then_fixed', g, _bad_train_config(
          _set('train.optimizer', 'adamx'), 'adamx', fix_and_rerun=True)),
      Case('train_bad_model_kwargs', g, _bad_train_config(
          _set('model.kwargs.features', (0, 8)), 'features')),
      Case('train_bad_augment', g, _bad_train_config(
          _set('data.augment', 'flipz'), 'flipz')),
      Case('train_bad_data_option', g, _bad_train_config(
          _set('data.options.seed', -3), '-3')),
      Case('train_lr_string', g, _bad_train_config(
          _set('train.learning_rate', '3e-3'), '3e-3')),
      Case('train_epochs_zero', g, _bad_train_config(
          _set('train.epochs', 0), 'epochs')),
      Case('resume_cosmetic_progress_bar', g, _resume_changed(
          'train.progress_bar', True), valid=True),
      Case('resume_cosmetic_eval_batch_size', g, _resume_changed(
          'train.eval_batch_size', 64), valid=True),
      Case('resume_changed_learning_rate', g, _resume_changed(
          'train.learning_rate', 1e-2), ('learning_rate',)),
      Case('checkpoint_other_architecture', g, _other_architecture_ckpt,
           ('latest.ckpt',)),
      Case('main_attack_overrides', g, lambda c: _main(
          [f'--config={sweep.DIGITS}:quick', *attack_overrides, '--mode=attack',
           f'--workdir={c.run_dir()}'], valid=True)(c)),
      Case('main_mode_typo', g, _main(
          [f'--config={sweep.DIGITS}', '--mode=attak', '--workdir=/tmp/x'],
          ('attak',))),
      Case('main_variant_typo', g, _main(
          [f'--config={sweep.DIGITS}:quik', '--workdir=/tmp/x'], ('quik',))),
      Case('main_no_workdir', g, _main([f'--config={sweep.DIGITS}'],
                                       ('workdir',))),
      Case('main_cpu_devices_word', g, _main(
          [f'--config={sweep.DIGITS}:quick', '--workdir=/tmp/x'],
          ("TINYROBUST_CPU_DEVICES='two'", '>= 1'),
          env_extra={'TINYROBUST_CPU_DEVICES': 'two'})),
      Case('readme_results_not_a_study', g, _readme_not_a_study),
  ]


CASES = _cli_cases()


@pytest.mark.parametrize('case', CASES, ids=sweep.ids(CASES))
def test_cli_misuse(case, misuse_ctx):
  sweep.check(case, misuse_ctx)
