"""The workdir lock and mode stamp (`tinyrobust.workdir`), without training.

Other processes are plain `python -c` children that import only
`tinyrobust.workdir` (fast); the run modes on real runs are in
tests/test_concurrency.py.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tinyrobust import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child(code: str, **kw) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, '-c', code], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, **kw)


def _holder_code(wd: str, mode: str, then: str = 'time.sleep(600)') -> str:
  return ('import sys, time\nfrom tinyrobust import workdir as w\n'
          f'with w.hold({wd!r}, {mode!r}):\n'
          "  print('held', flush=True)\n"
          f'  {then}\n')


def _wait_held(proc: subprocess.Popen) -> None:
  line = proc.stdout.readline()
  assert line.strip() == 'held', (line, proc.stderr.read()
                                  if proc.poll() is not None else '')


def test_second_process_fails_at_once_naming_the_holder(tmp_path):
  wd = str(tmp_path / 'run')
  holder = _child(_holder_code(wd, 'train'))
  try:
    _wait_held(holder)
    t0 = time.perf_counter()
    with pytest.raises(workdir_lib.WorkdirBusyError) as err:
      with workdir_lib.hold(wd, 'train'):
        pass
    assert time.perf_counter() - t0 < 2.0  # at once, no waiting
    msg = str(err.value)
    assert f'PID {holder.pid}' in msg and "mode 'train'" in msg
    assert os.path.join(wd, '.lock') in msg
    info = json.loads(open(os.path.join(wd, '.lock')).read())
    assert info['pid'] == holder.pid and info['host'] and info['started']
  finally:
    holder.kill()
    holder.wait()


def test_lock_of_a_killed_process_is_taken_over(tmp_path, capsys):
  wd = str(tmp_path / 'run')
  os.makedirs(wd)
  with open(os.path.join(wd, 'config.json'), 'w') as f:
    f.write('{}')  # a started run: the killed holder's files stay
  holder = _child(_holder_code(wd, 'train'))
  _wait_held(holder)
  os.kill(holder.pid, signal.SIGKILL)
  holder.wait()
  # The kernel dropped the flock with the process; its holder line remains.
  assert json.loads(open(os.path.join(wd, '.lock')).read())['pid'] == \
      holder.pid
  with workdir_lib.hold(wd, 'train'):
    info = json.loads(open(os.path.join(wd, '.lock')).read())
    assert info['pid'] == os.getpid()
  assert f"'pid': {holder.pid}" in capsys.readouterr().err.replace(
      '"', "'")
  # Released cleanly: the next run has nothing to take over.
  assert open(os.path.join(wd, '.lock')).read() == ''


def test_reentrant_in_one_process_and_cleans_an_unused_workdir(tmp_path):
  wd = str(tmp_path / 'new')
  with workdir_lib.hold(wd, 'train'):
    with workdir_lib.hold(wd, 'train'):
      assert json.load(open(os.path.join(wd, 'run_mode.json')))['mode'] == \
          'train'
  # Nothing but the lock and stamp was written: the folder is gone again,
  # so a failed command does not claim the workdir for its mode.
  assert not os.path.exists(wd)
  os.makedirs(wd)
  with workdir_lib.hold(wd, 'search'):
    pass
  assert os.listdir(wd) == []
  with workdir_lib.hold(wd, 'search'):
    open(os.path.join(wd, 'trials.jsonl'), 'w').close()
  assert sorted(os.listdir(wd)) == ['.lock', 'run_mode.json', 'trials.jsonl']


# Files an old (unstamped) workdir of each mode holds.
_OLD = {'train': {'config.json': '{}', 'metrics.jsonl': ''},
        'search': {'search_config.json': '{}', 'trials.jsonl': ''},
        'study': {'study_config.json': '{"tasks": {}}', 'report.md': ''},
        'search_study': {'study_config.json': '{"search_study": {}}'}}
MODES = ('train', 'attack', 'profile', 'search', 'study', 'search_study')


@pytest.mark.parametrize('stamped', [True, False], ids=['stamped', 'old'])
@pytest.mark.parametrize('made_by', sorted(_OLD))
def test_every_mode_refuses_another_modes_workdir(tmp_path, made_by,
                                                  stamped):
  wd = str(tmp_path / made_by)
  os.makedirs(wd)
  for name, text in _OLD[made_by].items():
    with open(os.path.join(wd, name), 'w') as f:
      f.write(text)
  if stamped:
    with workdir_lib.hold(wd, made_by):
      pass
  for mode in MODES:
    allowed = workdir_lib.READS.get(mode, mode) == made_by
    if allowed:
      with workdir_lib.hold(wd, mode):
        pass
      continue
    with pytest.raises(ValueError) as err:
      with workdir_lib.hold(wd, mode):
        pass
    msg = str(err.value)
    assert f'--mode={mode} refuses' in msg and f'--mode={made_by}' in msg
    assert workdir_lib.kind(made_by) in msg
  # The inferred kind is stamped by the first run that held the workdir.
  assert json.load(open(os.path.join(wd, 'run_mode.json')))['mode'] == \
      made_by


def test_bad_paths_are_named(tmp_path):
  with pytest.raises(ValueError, match='empty'):
    with workdir_lib.hold('', 'train'):
      pass
  link = tmp_path / 'dangling'
  os.symlink(tmp_path / 'gone', link)
  with pytest.raises(ValueError, match='symlink.*gone.*does not exist'):
    with workdir_lib.hold(str(link), 'train'):
      pass
  f = tmp_path / 'file'
  f.write_text('x')
  with pytest.raises(ValueError, match='is a file, not a directory'):
    with workdir_lib.hold(str(f), 'study'):
      pass
  # A reading mode on a missing workdir creates nothing (its own error
  # names the missing run).
  with workdir_lib.hold(str(tmp_path / 'none'), 'attack'):
    pass
  assert not os.path.exists(tmp_path / 'none')


def test_set_aside_moves_only_existing_files(tmp_path):
  (tmp_path / 'metrics.jsonl').write_text('{"epoch": 1}\n')
  (tmp_path / 'best.ckpt').write_text('b')
  dest = workdir_lib.set_aside(str(tmp_path), ('metrics.jsonl', 'best.ckpt',
                                               'latest.ckpt'))
  assert sorted(os.listdir(dest)) == ['best.ckpt', 'metrics.jsonl']
  assert os.path.basename(dest).startswith('replaced_')
  assert not (tmp_path / 'metrics.jsonl').exists()
  assert workdir_lib.set_aside(str(tmp_path), ('metrics.jsonl',)) is None
