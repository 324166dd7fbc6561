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

import jax
import pytest

from experiments.configs.study import parts
from experiments.configs.train import digits_cnn
from tests.nas import synthetic
from tinyrobust import checkpoints
from tinyrobust import fileio
from tinyrobust import modes
from tinyrobust import models
from tinyrobust import runs
from tinyrobust import train
from tinyrobust.evaluation import records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUSY = 'is in use by another run'
_SECOND = ('import json, sys\nimport ml_collections\n'
           'from tinyrobust import modes\n'
           'cfg = ml_collections.ConfigDict(json.loads(sys.argv[2]))\n'
           'modes.run(sys.argv[1], cfg, sys.argv[3])\n')


def _env() -> dict[str, str]:
  return {**os.environ, 'JAX_PLATFORMS': 'cpu', 'TF_CPP_MIN_LOG_LEVEL': '3'}


def second_run(mode: str, config, workdir: str
               ) -> subprocess.CompletedProcess:
  """`modes.run(mode, config, workdir)` in another process."""
  return subprocess.run(
      [sys.executable, '-c', _SECOND, mode,
       json.dumps(fileio.to_jsonable(config.to_dict())), workdir],
      cwd=REPO, capture_output=True, text=True, timeout=900, env=_env())


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


def run_beside_a_second(mode: str, config, workdir: str, monkeypatch) -> str:
  """Runs `mode` here; after its first epoch the same run starts in a
  second process, which must fail at once naming this one (its output is
  returned)."""
  spy = SecondRunDuringFirst(mode, config, workdir)
  monkeypatch.setattr(train, 'train_and_evaluate', spy)
  modes.run(mode, config, workdir)
  return check_refused(spy.result, os.getpid())


def epochs(path: str) -> list:
  return [r.get('epoch', 'final' if r.get('final') else None)
          for r in fileio.read_jsonl(path)]


def digits_config(epochs_=2):
  c = digits_cnn.get_config('quick')
  c.train.epochs = epochs_
  c.train.progress_bar = False
  c.model.kwargs.features = (4, 8)
  return c


def test_two_trainings_on_one_workdir(tmp_path, monkeypatch):
  wd = str(tmp_path / 'run')
  run_beside_a_second('train', digits_config(2), wd, monkeypatch)
  assert epochs(os.path.join(wd, 'metrics.jsonl')) == [1, 2, 'final']


def _study_config():
  c = parts.study_base(autoattack=False)
  c.attack.pgd_steps = 2
  c.attack.attacks = ('fgsm',)
  c.attack.max_examples = 64
  c.hardware.measure = False
  c.study.bootstrap = 50
  digits = parts.data_config('digits', epochs=2, lr=1e-2, batch_size=64)
  c.tasks.image = parts.task('pixel/255', (0.0, 16.0))
  m = c.tasks.image.models
  m.mlp_tiny = parts.entry(digits, 'tiny', 'mlp', raw=True, hidden=(8,))
  m.mlp_large = parts.entry(digits, 'large', 'mlp', raw=True, hidden=(32,))
  return c


def test_two_studies_on_one_workdir(tmp_path, monkeypatch):
  # No TFLite export (the study's profile stage keeps the analytic counts
  # and reports the export error): it has no part in the lock.
  def no_export(*args, **kwargs):
    raise RuntimeError('TFLite export skipped in this test')

  monkeypatch.setattr(runs.hardware, 'profile', no_export)
  wd = str(tmp_path / 'study')
  run_beside_a_second('study', _study_config(), wd, monkeypatch)
  for label in ('mlp_tiny', 'mlp_large'):
    path = os.path.join(wd, 'models', f'image__{label}', 'metrics.jsonl')
    assert epochs(path) == [1, 2, 'final'], label
  assert os.path.exists(os.path.join(wd, 'report.md'))


def _search_config():
  """Two 1-epoch trials; attacks compiled while training (the default),
  so trials skip the sanity runs."""
  return synthetic.mlp_search_config(attack={'max_examples': 32},
                                     precompile_attacks=True)


def test_two_searches_on_one_workdir(tmp_path, monkeypatch):
  wd = str(tmp_path / 'search')
  run_beside_a_second('search', _search_config(), wd, monkeypatch)
  lines = fileio.read_jsonl(os.path.join(wd, 'trials.jsonl'))
  for event in ('suggest', 'result'):
    trials = [l['trial'] for l in lines if l['event'] == event]
    assert sorted(trials) == sorted(set(trials)) and len(trials) == 2, lines
  for t in {l['trial'] for l in lines}:
    path = os.path.join(wd, 'trials', f'trial_{t:04d}', 'metrics.jsonl')
    assert epochs(path) == [1, 'final']


def _cli_train(wd: str, n_epochs: int) -> subprocess.Popen:
  return subprocess.Popen(
      [sys.executable, '-m', 'experiments.main',
       '--config=experiments/configs/train/digits_cnn.py:quick',
       f'--config.train.epochs={n_epochs}',
       '--config.train.progress_bar=False',
       '--config.model.kwargs.features=(4,8)', '--mode=train',
       f'--workdir={wd}'], cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True)


def _without_seconds(path):
  return [{k: v for k, v in r.items() if k != 'seconds'}
          for r in fileio.read_jsonl(path)]


def test_killed_run_lock_is_taken_over_and_resumes_to_same_result(
    tmp_path, capfd):
  killed = str(tmp_path / 'killed')
  proc = _cli_train(killed, 3)
  metrics = os.path.join(killed, 'metrics.jsonl')
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None and not (
      os.path.exists(metrics) and fileio.read_jsonl(metrics)):
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
  # Results of --mode=attack / --mode=profile on the old model.
  old = {n: f'{{"old": "{n}"}}' for n in checkpoints.RESULT_FILES}
  for name, text in old.items():
    with open(os.path.join(wd, name), 'w') as f:
      f.write(text)
  again, _ = modes.run('train', cfg, wd, restart=True)
  assert again['test_accuracy'] == first['test_accuracy']
  assert epochs(os.path.join(wd, 'metrics.jsonl')) == [1, 2, 'final']
  (aside,) = [d for d in os.listdir(wd) if d.startswith('replaced_')]
  assert epochs(os.path.join(wd, aside, 'metrics.jsonl')) == [1, 2, 'final']
  for name, text in old.items():  # moved aside whole, none left beside
    assert not os.path.exists(os.path.join(wd, name)), name
    assert open(os.path.join(wd, aside, name)).read() == text
  with pytest.raises(ValueError, match='--restart starts a training run'):
    modes.run('search', cfg, str(tmp_path / 'x'), restart=True)


def test_restart_result_files_are_what_attack_and_profile_write():
  assert {f'{records.RESULTS_NAME}.json', f'{records.RESULTS_NAME}.csv',
          'results.jsonl', 'profile.json'} == set(checkpoints.RESULT_FILES)
  assert set(checkpoints.RESULT_FILES) <= set(checkpoints.RESTART_FILES)


def test_checkpoint_of_another_architecture_names_both_files(tmp_path):
  small = models.get_model('mlp', 10, hidden=(8,))
  large = models.get_model('mlp', 10, hidden=(16, 4))
  x = jax.numpy.zeros((1, 8, 8, 1))
  v_small = small.init(jax.random.key(0), x, train=False)
  checkpoints.check_variables_fit(small, v_small, (8, 8, 1), str(tmp_path))
  with pytest.raises(ValueError) as err:
    checkpoints.check_variables_fit(large, v_small, (8, 8, 1), str(tmp_path))
  msg = str(err.value)
  assert os.path.join(str(tmp_path), 'best.ckpt') in msg
  assert os.path.join(str(tmp_path), 'config.json') in msg
  # Dense_0 and Dense_1 (kernel, bias) differ in shape; Dense_2 is new.
  assert '6 parameter(s) differ' in msg and 'checkpoint [64, 8], config ' \
      '[64, 16]' in msg and 'another architecture' in msg
  with pytest.raises(ValueError, match=r'for inputs \[4, 4, 2\]\): 1 param'
                     r'.*checkpoint \[64, 8\], config \[32, 8\]'):
    checkpoints.check_variables_fit(small, v_small, (4, 4, 2), str(tmp_path))
