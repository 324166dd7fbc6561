"""Every shipped config parses, validates and names registered models."""

import glob
import importlib
import os

import pytest

from tinyrobust import train
from tinyrobust.studies.robustness import config as study_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _modules(kind):
  files = glob.glob(os.path.join(ROOT, 'experiments', 'configs', kind, '*.py'))
  names = sorted(os.path.basename(f)[:-3] for f in files)
  return [n for n in names if n not in ('__init__', 'parts')]


def _train_configs():
  """(file, model) pairs: a file with a `MODELS` table once per model."""
  out = []
  for name in _modules('train'):
    mod = importlib.import_module(f'experiments.configs.train.{name}')
    out += [(name, m) for m in getattr(mod, 'MODELS', (None,))]
  return out


@pytest.mark.parametrize('name, model', _train_configs())
def test_training_configs_validate(name, model):
  mod = importlib.import_module(f'experiments.configs.train.{name}')
  pick = f',model={model}' if model else ''
  quick, full = mod.get_config('quick' + pick), mod.get_config('full' + pick)
  for c in (quick, full):
    train.check_config(c)
  assert quick.train.epochs <= full.train.epochs
  with pytest.raises(ValueError, match='variant'):
    mod.get_config('quik' + pick)
  if model:
    assert quick.model.name == full.model.name == model
    with pytest.raises(ValueError, match='model='):
      mod.get_config('quick')  # a table of models needs model=


@pytest.mark.parametrize('name', _modules('study'))
def test_study_configs_validate(name):
  mod = importlib.import_module(f'experiments.configs.study.{name}')
  for variant in ('quick', 'full'):
    c = mod.get_config(variant)
    study_config.check_study_config(c, build=False)
    for _, _, entry in study_config.entries(c):
      train.check_config(entry.config)


def test_search_study_config_validates():
  from tinyrobust.nas import search  # pylint: disable=g-import-not-at-top
  from tinyrobust.studies.search import runner as search_study  # pylint: disable=g-import-not-at-top
  mod = importlib.import_module('experiments.configs.search_study.auritus')
  quick, full = mod.get_config('quick'), mod.get_config('full,seeds=5')
  for c in (quick, full):
    search_study.check_search_study_config(c)
    for m in c.search_study.models:
      cfg = search.resolve_config(search_study.run_config(
          c, m, 'stm32l476rg', 'noadv', 1))
      search.check_search_config(cfg.search, cfg.attack)
      assert cfg.search.adversarial_weight == 0.0 and cfg.seed == 1
  assert full.search_study.n_seeds == 5 and quick.search_study.n_seeds == 3
  assert quick.searches['tcn'].search.num_trials < \
      full.searches['tcn'].search.num_trials
