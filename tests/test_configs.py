"""Every shipped config parses, validates and names registered models."""

import glob
import importlib
import os

import pytest

from tinyrobust import train
from tinyrobust.study import config as study_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _modules(kind):
  files = glob.glob(os.path.join(ROOT, 'experiments', 'configs', kind, '*.py'))
  names = sorted(os.path.basename(f)[:-3] for f in files)
  return [n for n in names if n not in ('__init__', 'parts')]


@pytest.mark.parametrize('name', _modules('train'))
def test_training_configs_validate(name):
  mod = importlib.import_module(f'experiments.configs.train.{name}')
  quick, full = mod.get_config('quick'), mod.get_config('full')
  for c in (quick, full):
    train.check_config(c)
  assert quick.train.epochs <= full.train.epochs
  with pytest.raises(ValueError, match='variant'):
    mod.get_config('quik')


@pytest.mark.parametrize('name', _modules('study'))
def test_study_configs_validate(name):
  mod = importlib.import_module(f'experiments.configs.study.{name}')
  for variant in ('quick', 'full'):
    c = mod.get_config(variant)
    study_config.check_study_config(c, build=False)
    for _, _, entry in study_config.entries(c):
      train.check_config(entry.config)
