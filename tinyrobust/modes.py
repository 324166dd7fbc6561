"""Run modes: what `experiments/main.py --mode=<name>` runs.

    train     train_and_evaluate(config, workdir)
    attack    robustness of a trained run over its `attack` section
              -> attack_results.json / .csv, results.jsonl (`runs.attack`)
    profile   hardware cost of a trained run -> profile.json
              (`runs.profile`)
    search    robust, MCU-aware architecture search
    study     the robustness study: tiny vs large models -> report.md
    search_study  the search study (Table 2): hand-crafted vs search
              without vs with the adversarial term -> report.md

Each mode is `fn(config, workdir)` registered in `MODES`; this module only
dispatches, holding the workdir's lock and checking its mode stamp
(`tinyrobust.workdir`: one writer, one mode per workdir). The pipeline on a trained run (load it, its threat model and
data, evaluate, write records; profile) is `tinyrobust.runs`.
"""

from __future__ import annotations

from typing import Any

from tinyrobust import nas
from tinyrobust import registry
from tinyrobust import runs
from tinyrobust import train as train_lib
from tinyrobust import workdir as workdir_lib
from tinyrobust.evaluation import tflite_target
from tinyrobust.studies import robustness as robustness_study
from tinyrobust.studies import search as search_study_lib

MODES = registry.Registry('mode')


def run(mode: str, config, workdir: str, *, restart: bool = False) -> Any:
  """Runs the registered mode `mode` holding `workdir`.

  The workdir is locked and its mode stamp checked first
  (`tinyrobust.workdir.hold`): a second run on it fails at once naming the
  holder, and a workdir of another mode is refused naming both.

  Args:
    mode: a name of `MODES`.
    config: the run's config (None for attack/profile: the run's own).
    workdir: the run's directory.
    restart: --mode=train only: start the training run over, moving its
      journal, checkpoints and config aside (`train_and_evaluate`).
  """
  fn = MODES.lookup(mode)
  if restart and mode != 'train':
    raise ValueError(f'--restart starts a training run over; it does not '
                     f'apply to --mode={mode}.')
  with workdir_lib.hold(workdir, mode):
    return fn(config, workdir, restart=True) if restart else fn(config,
                                                                workdir)


def _require_config(config, mode: str) -> None:
  if config is None:
    raise ValueError(f'--config is required for --mode={mode}.')


@MODES.register('train')
def train(config, workdir: str, *, restart: bool = False):
  """Trains `config`'s model in `workdir` (resumes a killed run; starts
  over with `restart`)."""
  _require_config(config, 'train')
  if restart:
    return train_lib.train_and_evaluate(config, workdir, restart=True)
  return train_lib.train_and_evaluate(config, workdir)


@MODES.register('attack')
def attack(config, workdir: str) -> dict[str, Any]:
  """Attacks a trained run (`tinyrobust.runs.attack`), or a bare flatbuffer
  when the config has a `target` section (`evaluation.tflite_target`)."""
  if config is not None and 'target' in config:
    return tflite_target.attack(config, workdir)
  return runs.attack(config, workdir)


@MODES.register('profile')
def profile(config, workdir: str) -> dict[str, Any]:
  """Profiles a trained run (`tinyrobust.runs.profile`)."""
  return runs.profile(config, workdir)


@MODES.register('search')
def search(config, workdir: str) -> dict[str, Any]:
  """Robust, MCU-aware architecture search (`tinyrobust.nas.run_search`)."""
  _require_config(config, 'search')
  return nas.run_search(config, workdir)


@MODES.register('study')
def study(config, workdir: str) -> dict[str, Any]:
  """The robustness study (`tinyrobust.studies.robustness.run_study`):
  every model of every task trained, attacked and profiled; report.md in
  `workdir`."""
  _require_config(config, 'study')
  return robustness_study.run_study(config, workdir)


@MODES.register('search_study')
def search_study(config, workdir: str) -> dict[str, Any]:
  """The search study (Table 2): `tinyrobust.studies.search`."""
  _require_config(config, 'search_study')
  return search_study_lib.run_search_study(config, workdir)


def names() -> list[str]:
  return MODES.names()
