"""The trainer: accuracy on digits, exact resume, config overrides, bad input."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments.configs.train import digits_cnn
from tinyrobust import fileio
from tinyrobust import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(epochs):
  c = digits_cnn.get_config()
  c.train.epochs = epochs
  c.train.progress_bar = False
  return c


def test_digits_cnn_reaches_95_percent_and_writes_workdir(tmp_path):
  metrics, variables = train.train_and_evaluate(_cfg(8), str(tmp_path))
  assert metrics['test_accuracy'] >= 0.95, metrics
  assert metrics['test_count'] == 359
  lines = fileio.read_jsonl(str(tmp_path / 'metrics.jsonl'))
  assert [l['epoch'] for l in lines[:-1]] == list(range(1, 9))
  assert lines[-1]['final'] and 'protocol' in lines[-1]
  assert fileio.read_json(str(tmp_path / 'config.json'))['model']['name'] == 'cnn'
  model, loaded, config = train.load_trained(str(tmp_path))
  assert config.model.num_classes == 10
  jax.tree_util.tree_map(np.testing.assert_array_equal, variables, loaded)
  test = __import__('tinyrobust.data', fromlist=['load']).load('digits', 'test')
  logits = model.apply(loaded, test.x, train=False)
  acc = float(np.mean(np.argmax(logits, -1) == test.y))
  assert acc == pytest.approx(metrics['test_accuracy'])


class _Kill(Exception):
  pass


def test_resume_after_interruption_gives_identical_params(tmp_path):
  full_dir, cut_dir = str(tmp_path / 'full'), str(tmp_path / 'cut')
  _, full_vars = train.train_and_evaluate(_cfg(3), full_dir)

  def kill(epoch, state):
    if epoch == 1:
      raise _Kill()

  with pytest.raises(_Kill):
    train.train_and_evaluate(_cfg(3), cut_dir, callbacks=[kill])
  assert len(fileio.read_jsonl(os.path.join(cut_dir, 'metrics.jsonl'))) == 2
  _, resumed_vars = train.train_and_evaluate(_cfg(3), cut_dir)
  jax.tree_util.tree_map(np.testing.assert_array_equal, full_vars,
                         resumed_vars)
  full_latest = fileio.load_pytree(os.path.join(full_dir, 'latest.ckpt'))
  cut_latest = fileio.load_pytree(os.path.join(cut_dir, 'latest.ckpt'))
  jax.tree_util.tree_map(np.testing.assert_array_equal,
                         full_latest['state'], cut_latest['state'])


def test_restart_with_different_config_is_refused(tmp_path):
  train.train_and_evaluate(_cfg(1), str(tmp_path))
  c = _cfg(1)
  c.train.learning_rate = 0.5
  with pytest.raises(ValueError, match='train.learning_rate'):
    train.train_and_evaluate(c, str(tmp_path))


@pytest.mark.parametrize('field,value,match', [
    ('model.name', 'resnet999', "Unknown model 'resnet999'"),
    ('data.name', 'imagenet', "Unknown dataset 'imagenet'"),
    ('train.optimizer', 'lion', "Unknown optimizer 'lion'"),
    ('train.epochs', 0, 'epochs must be >= 1'),
])
def test_bad_config_fails_before_training(tmp_path, field, value, match):
  c = _cfg(1)
  section, key = field.split('.')
  c[section][key] = value
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(c, str(tmp_path / 'w'))
  assert not os.path.exists(tmp_path / 'w' / 'latest.ckpt')


def test_launcher_applies_config_overrides(tmp_path):
  workdir = str(tmp_path / 'run')
  cmd = [sys.executable, '-m', 'experiments.main',
         '--config=experiments/configs/train/basic_motions_cnn.py:quick',
         '--config.train.epochs=2', '--config.train.batch_size=4',
         '--config.model.kwargs.features=(8,)', f'--workdir={workdir}']
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  cfg = fileio.read_json(os.path.join(workdir, 'config.json'))
  assert cfg['train']['epochs'] == 2 and cfg['train']['batch_size'] == 4
  assert list(cfg['model']['kwargs']['features']) == [8]
  lines = fileio.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  assert len(lines) == 3 and lines[-1]['final']
  assert 'test accuracy' in out.stdout


def test_digits_cnn_quick_docstring_figure_is_measured(tmp_path):
  """The accuracy the config's docstring states is what a run gives."""
  import re  # pylint: disable=g-import-not-at-top
  stated = float(re.search(r'quick test accuracy\s+([0-9.]+)',
                           digits_cnn.__doc__.replace('\n', ' ')).group(1))
  c = digits_cnn.get_config('quick')
  c.train.progress_bar = False
  metrics, _ = train.train_and_evaluate(c, str(tmp_path))
  assert abs(metrics['test_accuracy'] - stated) <= 0.03, (metrics, stated)
