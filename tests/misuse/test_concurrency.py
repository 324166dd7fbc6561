"""Misuse sweep, concurrency (issue 23): two runs on one workdir, run modes
mixed up, partial deletions, environment failures, clip ranges that exclude
the data, repeated launcher overrides, and the unclear messages of the
issue's sweep.

The two-process cases run the first run in this process (`modes.run`) and,
after its first epoch, the same run in a child (`tests/test_concurrency.py`
helpers): duplicated journal records are `loss`, a second run that exits 0
is `silent`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from tests.misuse import sweep

Case, Verdict, pkg = sweep.Case, sweep.Verdict, sweep.pkg
BUSY = 'is in use by another run'


def _helpers():
  return pkg('tests.test_concurrency')


def _train_journal(wd: str) -> str:
  got = _helpers().epochs(os.path.join(wd, 'metrics.jsonl'))
  want = list(range(1, sum(isinstance(e, int) for e in got) + 1))
  return '' if got == want + ['final'] and len(set(got)) == len(got) else \
      f'metrics.jsonl reads {got}'


def _search_journal(wd: str) -> str:
  io = pkg('tinyrobust.fileio')
  lines = io.read_jsonl(os.path.join(wd, 'trials.jsonl'))
  for event in ('suggest', 'result'):
    t = [l['trial'] for l in lines if l['event'] == event]
    if len(t) != len(set(t)):
      return f'trials.jsonl has {event} records {t}'
  return ''


def _study_journal(wd: str) -> str:
  root = os.path.join(wd, 'models')
  for d in sorted(os.listdir(root)):
    bad = _train_journal(os.path.join(root, d))
    if bad:
      return f'{d}: {bad}'
  return ''


def _two_runs(mode: str, make_config, journal):
  def fn(ctx):
    modes, train, h = pkg('tinyrobust.modes'), pkg('tinyrobust.train'), \
        _helpers()
    wd = ctx.path(f'two_{mode}')
    cfg = make_config(ctx)
    spy = h.SecondRunDuringFirst(mode, cfg, wd)
    real = train.train_and_evaluate
    train.train_and_evaluate = spy
    try:
      modes.run(mode, cfg, wd)
    finally:
      train.train_and_evaluate = real
    text = spy.result.stderr + spy.result.stdout
    tail = ' | '.join(text.strip().splitlines()[-1:])[:300]
    bad = journal(wd)
    if bad:
      return Verdict('loss', f'{bad}; second run exit '
                     f'{spy.result.returncode}')
    if spy.result.returncode == 0:
      return Verdict('silent', 'second run exit 0 beside the first')
    if BUSY in text and f'PID {os.getpid()}' in text:
      return Verdict('clear', tail)
    return Verdict('unclear', tail)
  return fn


def _train_cfg(ctx):
  return ctx.config(epochs=2)


def _search_cfg(ctx):
  del ctx
  c = _helpers()._search_config()  # pylint: disable=protected-access
  c.search.num_trials = 1
  return c


def _study_cfg(ctx):
  del ctx
  return _helpers()._study_config()  # pylint: disable=protected-access


def holder_child(wd: str, mode: str) -> subprocess.Popen:
  """A child process holding `wd`'s lock (`workdir.hold(wd, mode)`)."""
  code = ('from tinyrobust import workdir as w\nimport time\n'
          f'with w.hold({wd!r}, {mode!r}):\n'
          "  print('held', flush=True)\n  time.sleep(600)\n")
  p = subprocess.Popen([sys.executable, '-c', code], cwd=sweep.REPO,
                       stdout=subprocess.PIPE, text=True)
  if p.stdout.readline().strip() != 'held':
    p.kill()
    raise sweep.SetupError('the holder child did not start')
  return p


def run_copy(ctx, name: str, edit=None) -> str:
  """A copy of the shared trained run, `edit(path)` applied to it."""
  d = ctx.path(name)
  shutil.copytree(ctx.run_dir(), d)
  if edit is not None:
    edit(d)
  return d


def other_architecture(d: str) -> None:
  """Edits the run's config.json to another architecture than best.ckpt's."""
  path = os.path.join(d, 'config.json')
  with open(path) as f:
    cfg = json.load(f)
  cfg['model']['kwargs']['features'] = [8, 16]
  with open(path, 'w') as f:
    json.dump(cfg, f)


def _killed_holder(ctx):
  """A run killed with -9 leaves its lock file: the next run resumes."""
  wd = ctx.path('killed_holder')
  p = holder_child(wd, 'train')
  os.kill(p.pid, signal.SIGKILL)
  p.wait()
  pkg('tinyrobust.modes').run('train', ctx.config(), wd)
  if _train_journal(wd):
    return Verdict('loss', _train_journal(wd))
  return Verdict('clear', 'lock of the killed run taken over; trained')


def _deleted_latest(ctx):
  """A finished run whose latest.ckpt and final_metrics.json are deleted."""
  d = ctx.path('deleted_latest')
  shutil.copytree(ctx.run_dir(), d)
  for name in ('latest.ckpt', 'final_metrics.json'):
    os.remove(os.path.join(d, name))
  try:
    pkg('tinyrobust.modes').run('train', ctx.config(), d)
  except ValueError as err:
    msg = str(err)
    if all(n in msg for n in ('metrics.jsonl', 'latest.ckpt', '--restart')):
      return Verdict('clear', msg[:300])
    return Verdict('unclear', msg[:300])
  bad = _train_journal(d)
  return Verdict('loss' if bad else 'silent', bad or 'retrained silently')


def _needs_data(ctx):
  """Every trial fails with DataNotFoundError, then the data arrives."""
  nas = pkg('tinyrobust.nas')
  tf = pkg('tests.nas.test_failures')
  wd = ctx.path('search_no_data')
  marker = os.path.join(wd + '_data', 'x.npz')
  fn = tf.NeedsData(marker)
  space = fn.bowl.space()
  first = None
  try:
    nas.run_search(tf.bowl_config(3), wd, evaluate_fn=fn, space=space)  # pylint: disable=protected-access
  except RuntimeError as err:
    first = str(err)
    if 'DataNotFoundError x3' not in first:
      return Verdict('unclear', first[:300])
  os.makedirs(os.path.dirname(marker))
  open(marker, 'w').close()
  again = nas.run_search(tf.bowl_config(3), wd, evaluate_fn=tf.NeedsData(marker),  # pylint: disable=protected-access
                         space=space)
  if again.get('best_trial') is None:
    return Verdict('loss', 'with the data present the rerun trains nothing: '
                   'best_trial null')
  if first is None:
    return Verdict('silent', 'all trials failed and the search exited 0')
  return Verdict('clear', first[:200] + ' ... then resumed and trained')


def _mode_on(mode: str, make_config, make_workdir, kinds):
  """`modes.run(mode)` on another mode's workdir must be refused."""
  def fn(ctx):
    wd = make_workdir(ctx)
    before = set(os.listdir(wd))
    try:
      pkg('tinyrobust.modes').run(mode, make_config(ctx), wd)
    except ValueError as err:
      if set(os.listdir(wd)) - before - {'.lock', 'run_mode.json'}:
        return Verdict('unclear', f'wrote before refusing: {err}'[:300])
      if all(k in str(err) for k in kinds):
        return Verdict('clear', str(err)[:300])
      return Verdict('unclear', str(err)[:300])
    new = sorted(set(os.listdir(wd)) - before)
    return Verdict('silent', f'--mode={mode} ran in it, wrote {new}'[:300])
  return fn


def _run_copy(ctx):
  d = ctx.path('train_run')
  shutil.copytree(ctx.run_dir(), d)
  return d


def _study_dir(ctx):
  d = ctx.path('study_dir')
  os.makedirs(os.path.join(d, 'models'))
  with open(os.path.join(d, 'study_config.json'), 'w') as f:
    json.dump({'tasks': {}}, f)
  open(os.path.join(d, 'report.md'), 'w').close()
  return d


def _pgd_clip(clip):
  def fn(ctx):
    x, y = ctx.xy()
    x_adv = ctx.pgd(clip=clip)(ctx.mlp()[1], x, y, ctx.key(), 0.05)
    import numpy as np  # pylint: disable=g-import-not-at-top
    return f'linf distance {float(np.abs(np.asarray(x_adv) - x).max()):.3f}'
  return fn


def _eval_standardised(ctx):
  x, y = ctx.xy()
  xs = (x - x.mean()) / x.std()  # standardised pixels, about [-1, 3]
  res = ctx.evaluate(dataset=(xs, y), clip=(0.0, 1.0))
  return sweep.flagged(res, 'clip (0, 1) on standardised data')


def _attack_call(eps, n=None):
  def fn(ctx):
    x, y = ctx.xy()
    n_ = len(x) if n is None else n
    e = eps(n_) if callable(eps) else eps
    return ctx.pgd()(ctx.mlp()[1], x[:n_], y[:n_], ctx.key(), e)
  return fn


def _evaluator_batch_zero(ctx):
  ev = pkg('tinyrobust.evaluation')
  return ev.RobustnessEvaluator(ctx.mlp()[2], {}, [0.0, 0.1], batch_size=0)


def _dangling(ctx):
  link = ctx.path('dangling')
  os.symlink(link + '_target_gone', link)
  return link


def write_file(name: str, text: str):
  """An edit writing `text` into the run's file `name`."""
  def edit(d):
    with open(os.path.join(d, name), 'w') as f:
      f.write(text)
  return edit


def _emptied_config(ctx):
  d = run_copy(ctx, 'emptied_config', write_file('config.json', '{}'))
  return pkg('tinyrobust.modes').run('attack', ctx.attack_config(), d)


def _other_arch_config(ctx):
  """config.json edited to another architecture than best.ckpt's."""
  d = run_copy(ctx, 'other_arch_attack', other_architecture)
  return pkg('tinyrobust.modes').run('attack', None, d)


def _main(args, needles):
  return pkg('tests.misuse.test_cli')._main(args, needles)  # pylint: disable=protected-access


def _concurrency_cases() -> list[Case]:
  g = 'concurrency'
  return [
      Case('two_trainings_one_workdir', g, _two_runs(
          'train', _train_cfg, _train_journal)),
      Case('two_searches_one_workdir', g, _two_runs(
          'search', _search_cfg, _search_journal)),
      Case('two_studies_one_workdir', g, _two_runs(
          'study', _study_cfg, _study_journal)),
      Case('killed_holder_lock_taken_over', g, _killed_holder),
      Case('deleted_latest_ckpt_then_rerun', g, _deleted_latest),
      Case('search_all_failed_no_data_then_data', g, _needs_data),
      Case('study_on_training_run', g, _mode_on(
          'study', _study_cfg, _run_copy, ('training run', '--mode=study'))),
      Case('search_on_training_run', g, _mode_on(
          'search', _search_cfg, _run_copy, ('training run', '--mode=search'))),
      Case('train_on_study_workdir', g, _mode_on(
          'train', _train_cfg, _study_dir, ('robustness study',
                                            '--mode=train'))),
      Case('attack_on_study_workdir', g, _mode_on(
          'attack', lambda c: c.attack_config(), _study_dir,
          ('robustness study', '--mode=attack'))),
      Case('pgd_clip_excludes_data', g, _pgd_clip((2.0, 3.0)),
           ('(2, 3)', 'min')),
      Case('pgd_clip_empty_range', g, _pgd_clip((0.5, 0.5)), ('0.5', 'lo')),
      Case('evaluate_clip_excludes_standardised_data', g, _eval_standardised,
           ('(0, 1)', 'outside')),
      Case('main_repeated_override', g, lambda c: _main(
          [f'--config={sweep.DIGITS}:quick',
           '--config.model.kwargs.features=(4,8)',
           '--config.model.kwargs.features=4', '--config.train.epochs=1',
           f'--workdir={c.path("repeated")}'],
          ('--config.model.kwargs.features', 'once'))(c)),
      Case('main_workdir_empty', g, _main(
          [f'--config={sweep.DIGITS}:quick', '--workdir='], ('empty',))),
      Case('main_restart_not_train', g, lambda c: _main(
          [f'--config={sweep.DIGITS}:quick', '--mode=search', '--restart',
           f'--workdir={c.path("restart")}'], ('--restart',))(c)),
      Case('workdir_dangling_symlink', g, lambda c: pkg(
          'tinyrobust.modes').run('train', c.config(), _dangling(c)),
           ('symlink', 'does not exist')),
      Case('eps_python_list', g, _attack_call(lambda n: [0.05] * n),
           valid=True),
      Case('eps_none', g, _attack_call(None), ('None',)),
      Case('empty_batch', g, _attack_call(0.05, n=0), ('empty',)),
      Case('evaluator_batch_size_zero', g, _evaluator_batch_zero,
           ('batch_size', '0')),
      Case('config_json_emptied', g, _emptied_config, ('config.json',)),
      Case('variables_of_other_architecture', g, _other_arch_config,
           ('best.ckpt', 'config.json', 'another architecture')),
  ]


CASES = _concurrency_cases()


@pytest.mark.parametrize('case', CASES, ids=sweep.ids(CASES))
def test_concurrency_misuse(case, misuse_ctx):
  sweep.check(case, misuse_ctx)
