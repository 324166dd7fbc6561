"""Two processes on one workdir, kill -9 take-over, partial deletions.

Every run goes through `modes.run` (what `experiments/main.py` calls). The
first run is in this process; when its first epoch (or model, or trial) is
done, a second process starts the same run on the same workdir
(`second_run`): it must fail at once naming the holder, and the first
run's journals must end with each record once.
"""

import json
import os
import signal
import subprocess
import sys
import time

import ml_collections
import pytest

from experiments.configs.study import parts
from experiments.configs.train import digits_cnn
from tinyrobust import io
from tinyrobust import modes
from tinyrobust import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUSY = 'is in use by another run'
_SECOND = ('import json, sys\nimport ml_collections\n'
           'from tinyrobust import modes\n'
           'cfg = ml_collections.ConfigDict(json.loads(sys.argv[2]))\n'
           'modes.run(sys.argv[1], cfg, sys.argv[3])\n')


def second_run(mode: str, config, workdir: str
               ) -> subprocess.CompletedProcess:
  """`modes.run(mode, config, workdir)` in another process."""
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'TF_CPP_MIN_LOG_LEVEL': '3'}
  return subprocess.run(
      [sys.executable, '-c', _SECOND, mode,
       json.dumps(io.to_jsonable(config.to_dict())), workdir],
      cwd=REPO, capture_output=True, text=True, timeout=900, env=env)


class SecondRunDuringFirst:
  """Wraps `train.train_and_evaluate`: before its `at`-th call finishes
  (after its first epoch), runs `second_run` once and keeps the result."""

  def __init__(self, mode, config, workdir, at=1):
    self.args, self.at, self.calls, self.result = (mode, config, workdir), \
        at, 0, None
    self.real = train.train_and_evaluate

  def __call__(self, cfg, wd, **kw):
    self.calls += 1
    if self.calls != self.at:
      return self.real(cfg, wd, **kw)

    def cb(epoch, state):
      del state
      if epoch == 0:
        self.result = second_run(*self.args)
    return self.real(cfg, wd, callbacks=[cb], **kw)


def check_refused(result, first_pid: int) -> str:
  text = result.stderr + result.stdout
  assert result.returncode != 0, text[-2000:]
  assert BUSY in text and f'PID {first_pid}' in text, text[-2000:]
  return text


def epochs(path: str) -> list:
  return [r.get('epoch', 'final' if r.get('final') else None)
          for r in io.read_jsonl(path)]


def digits_config(epochs_=2):
  c = digits_cnn.get_config('quick')
  c.train.epochs = epochs_
  c.train.progress_bar = False
  c.model.kwargs.features = (4, 8)
  return c


def test_two_trainings_on_one_workdir(tmp_path, monkeypatch):
  wd = str(tmp_path / 'run')
  cfg = digits_config(2)
  spy = SecondRunDuringFirst('train', cfg, wd)
  monkeypatch.setattr(train, 'train_and_evaluate', spy)
  modes.run('train', cfg, wd)
  check_refused(spy.result, os.getpid())
  assert epochs(os.path.join(wd, 'metrics.jsonl')) == [1, 2, 'final']


def _study_config():
  c = parts.study_base(autoattack=False)
  c.attack.pgd_steps = 2
  c.attack.attacks = ('fgsm',)
  c.hardware.measure = False
  c.study.bootstrap = 50
  digits = parts.data_config('digits', epochs=2, lr=1e-2, batch_size=64)
  c.tasks.image = parts.task('pixel/255', (0.0, 16.0))
  m = c.tasks.image.models
  m.mlp_tiny = parts.entry(digits, 'tiny', 'mlp', raw=True, hidden=(8,))
  m.mlp_large = parts.entry(digits, 'large', 'mlp', raw=True, hidden=(32,))
  return c


def test_two_studies_on_one_workdir(tmp_path, monkeypatch):
  wd = str(tmp_path / 'study')
  cfg = _study_config()
  spy = SecondRunDuringFirst('study', cfg, wd)
  monkeypatch.setattr(train, 'train_and_evaluate', spy)
  modes.run('study', cfg, wd)
  check_refused(spy.result, os.getpid())
  for label in ('mlp_tiny', 'mlp_large'):
    path = os.path.join(wd, 'models', f'image__{label}', 'metrics.jsonl')
    assert epochs(path) == [1, 2, 'final'], label
  assert os.path.exists(os.path.join(wd, 'report.md'))


def _search_config():
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = ml_collections.ConfigDict({'name': 'basic_motions',
                                      'options': {'seed': 0},
                                      'augment': 'none'})
  c.model = ml_collections.ConfigDict({'name': 'mlp', 'kwargs': {}})
  c.train = ml_collections.ConfigDict({
      'epochs': 2, 'batch_size': 16, 'learning_rate': 3e-3,
      'progress_bar': False})
  c.search = ml_collections.ConfigDict({
      'space': 'mlp', 'board': '', 'flash_max_bytes': 400e3,
      'sram_max_bytes': 64e3, 'flash_proxy': 'param_bytes',
      'sram_gate': 'study', 'precision': 'float32', 'num_trials': 2,
      'n_initial_points': 2, 'trial_epochs': 2, 'final_retrain': False,
      'precompile_attacks': False})
  c.attack = ml_collections.ConfigDict({'attacks': ['fgsm'], 'eps_grid': [0.1],
                                        'max_examples': 32})
  return c


def test_two_searches_on_one_workdir(tmp_path, monkeypatch):
  wd = str(tmp_path / 'search')
  cfg = _search_config()
  spy = SecondRunDuringFirst('search', cfg, wd)
  monkeypatch.setattr(train, 'train_and_evaluate', spy)
  modes.run('search', cfg, wd)
  check_refused(spy.result, os.getpid())
  lines = io.read_jsonl(os.path.join(wd, 'trials.jsonl'))
  for event in ('suggest', 'result'):
    trials = [l['trial'] for l in lines if l['event'] == event]
    assert sorted(trials) == sorted(set(trials)) and len(trials) == 2, lines
  for t in {l['trial'] for l in lines}:
    path = os.path.join(wd, 'trials', f'trial_{t:04d}', 'metrics.jsonl')
    assert epochs(path) == [1, 2, 'final']


def _cli_train(wd: str, n_epochs: int) -> subprocess.Popen:
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'TF_CPP_MIN_LOG_LEVEL': '3'}
  return subprocess.Popen(
      [sys.executable, '-m', 'experiments.main',
       '--config=experiments/configs/train/digits_cnn.py:quick',
       f'--config.train.epochs={n_epochs}',
       '--config.train.progress_bar=False',
       '--config.model.kwargs.features=(4,8)', '--mode=train',
       f'--workdir={wd}'], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True)


def _without_seconds(path):
  return [{k: v for k, v in r.items() if k != 'seconds'}
          for r in io.read_jsonl(path)]


def test_killed_run_lock_is_taken_over_and_resumes_to_same_result(
    tmp_path, capfd):
  killed = str(tmp_path / 'killed')
  proc = _cli_train(killed, 3)
  metrics = os.path.join(killed, 'metrics.jsonl')
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None and not (
      os.path.exists(metrics) and io.read_jsonl(metrics)):
    time.sleep(0.2)
  assert proc.poll() is None, proc.stderr.read()[-2000:]
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  holder = json.loads(open(os.path.join(killed, '.lock')).read())
  assert holder['pid'] == proc.pid  # left behind by kill -9
  modes.run('train', digits_config(3), killed)
  err = capfd.readouterr().err
  assert 'taking over the lock' in err and str(proc.pid) in err
  straight = str(tmp_path / 'straight')
  modes.run('train', digits_config(3), straight)
  assert epochs(metrics) == [1, 2, 3, 'final']
  assert _without_seconds(metrics) == _without_seconds(
      os.path.join(straight, 'metrics.jsonl'))


def test_deleted_latest_checkpoint_is_refused_then_restart(tmp_path):
  wd = str(tmp_path / 'run')
  cfg = digits_config(2)
  first, _ = modes.run('train', cfg, wd)
  for name in (train.LATEST, train.FINAL):
    os.remove(os.path.join(wd, name))
  with pytest.raises(ValueError) as err:
    modes.run('train', cfg, wd)
  msg = str(err.value)
  assert os.path.join(wd, 'metrics.jsonl') in msg
  assert os.path.join(wd, 'latest.ckpt') in msg and '--restart' in msg
  assert epochs(os.path.join(wd, 'metrics.jsonl')) == [1, 2, 'final']
  again, _ = modes.run('train', cfg, wd, restart=True)
  assert again['test_accuracy'] == first['test_accuracy']
  assert epochs(os.path.join(wd, 'metrics.jsonl')) == [1, 2, 'final']
  (aside,) = [d for d in os.listdir(wd) if d.startswith('replaced_')]
  assert epochs(os.path.join(wd, aside, 'metrics.jsonl')) == [1, 2, 'final']
  with pytest.raises(ValueError, match='--restart starts a training run'):
    modes.run('search', cfg, str(tmp_path / 'x'), restart=True)
