"""Trained runs of the `quick` training configs, shared by the tables.

`trained('auritus_tcn', runs)` returns `<runs>/auritus_tcn`, training it
first with `experiments/configs/train/auritus_tcn.py:quick` if that run is
not finished (a killed run resumes).
"""

from __future__ import annotations

import importlib
import os

from tinyrobust import modes
from tinyrobust import train


def config(name: str, variant: str = 'quick'):
  """The training config `experiments/configs/train/<name>.py:<variant>`."""
  return importlib.import_module(
      f'experiments.configs.train.{name}').get_config(variant)


def trained(name: str, runs: str, variant: str = 'quick') -> str:
  """The run folder of training config `name`, trained if missing."""
  workdir = os.path.join(runs, name)
  if not train.is_finished(workdir):
    cfg = config(name, variant)
    cfg.train.progress_bar = False
    modes.run('train', cfg, workdir)
  return workdir
