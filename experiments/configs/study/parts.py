"""Building blocks of the study configs (one definition each)."""

import importlib
import os

import ml_collections

from experiments.configs import common


# AutoAttack budgets: the paper's standard one (APGD-CE 100 steps, APGD-T
# and FAB-T 9 targets x 100 steps, Square 5,000 queries) for the full
# studies; a stated reduced one for the quick variants on a 2-core CPU.
AUTOATTACK_STANDARD = {'version': 'standard', 'steps': 100,
                       'n_target_classes': 9, 'queries': 5000}
AUTOATTACK_QUICK = {'version': 'standard', 'steps': 25,
                    'n_target_classes': 3, 'queries': 500}


def study_base(quick: bool = False, autoattack: bool = True
               ) -> ml_collections.ConfigDict:
  """Base config plus the study's sections: FGSM, PGD-10 and (unless
  `autoattack=False`) AutoAttack, standard version, at `AUTOATTACK_QUICK`'s
  reduced budget when `quick`."""
  c = common.base_config()
  c.attack.attacks = ('fgsm', 'pgd') + (('autoattack',) if autoattack else ())
  c.attack.pgd_steps = 10
  if autoattack:
    c.attack.options.autoattack = dict(
        AUTOATTACK_QUICK if quick else AUTOATTACK_STANDARD)
  c.hardware = ml_collections.ConfigDict({'measure': True})
  c.study = ml_collections.ConfigDict({'executor': 'sequential',
                                       'num_workers': 1, 'bootstrap': 1000})
  # Issue 26: `--config.study.adv_train=pgd_at|trades|fgsm_rs` adds
  # adversarially trained copies (tinyrobust.studies.robustness.defended).
  c.study.adv_train = 'none'
  c.study.adv_train_kinds = ('tiny', 'large')
  c.study.adv_train_options = {'steps': 3 if quick else 10}
  c.study.adv_train_qat_epochs = 0  # k > 0: the copies' last k epochs int8-aware
  c.tasks = ml_collections.ConfigDict()
  return c


# The study's attacker without access to the target (issue 25): PGD (the
# white-box attack's options and key, so the diagonal is the white-box
# number) and MI-FGSM crafted on every model and on the large / tiny
# ensembles, judged by every model and by every model's int8 LiteRT export
# (float -> int8); universal perturbations (SGD-UAP) per model at two eps.
# Quick budgets on a 2-core CPU: MI-FGSM 10 steps; SGD-UAP 2 epochs of
# batches of 64 training examples, step 0.1 eps.
def transfer_sections(c, *, quick: bool, universal_eps) -> None:
  """Adds `attack.transfer` and `attack.universal` to a study config."""
  c.attack.transfer = ml_collections.ConfigDict({
      'attacks': ('pgd', 'mi-fgsm'), 'ensemble': True, 'int8': True,
      'options': {'mi-fgsm': {'steps': 10}}})
  c.attack.universal = ml_collections.ConfigDict({
      'eps': tuple(universal_eps), 'epochs': 2 if quick else 10,
      'batch_size': 64 if quick else 128, 'rel_step_size': 0.1})


def data_config(name: str, *, epochs: int, lr: float, batch_size: int,
                **options) -> ml_collections.ConfigDict:
  """A training config skeleton on dataset `name` (seed-0 split)."""
  c = common.base_config()
  del c.attack
  c.data.name = name
  c.data.options.seed = 0
  c.data.options.update(options)
  c.train.epochs = epochs
  c.train.learning_rate = lr
  c.train.batch_size = batch_size
  c.train.progress_bar = False
  return c


def task(eps_units: str, eps_grid) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({'eps_units': eps_units,
                                    'eps_grid': tuple(eps_grid),
                                    'models': ml_collections.ConfigDict()})


def entry(data_cfg, kind: str, model: str, *, raw: bool = False,
          nas: bool = False, transfer: bool = False, train=None, **kwargs
          ) -> ml_collections.ConfigDict:
  """One model of a task: its Table-1 attributes and training config
  (`train` overrides fields of the task's training section)."""
  cfg = ml_collections.ConfigDict(data_cfg.to_dict())
  cfg.model.name = model
  cfg.model.kwargs = ml_collections.ConfigDict(kwargs)
  cfg.train.update(train or {})
  return ml_collections.ConfigDict({
      'kind': kind, 'input': 'raw' if raw else 'features', 'nas': nas,
      'transfer': transfer, 'config': cfg})


def from_train(kind: str, train_config: str, variant: str | None = None, *,
               raw: bool = True, nas: bool = False, transfer: bool = False,
               train=None, **model_kwargs) -> ml_collections.ConfigDict:
  """A study entry whose training config is `experiments/configs/train/
  <train_config>.py[:variant]`, so the study trains each model exactly as
  its own training command does (`train` and `model_kwargs` override)."""
  module = importlib.import_module(f'experiments.configs.train.{train_config}')
  cfg = module.get_config(variant)
  if 'attack' in cfg:
    del cfg.attack  # the study's attack section applies to every model
  cfg.train.progress_bar = False
  cfg.train.update(train or {})
  cfg.model.kwargs.update(model_kwargs)
  return ml_collections.ConfigDict({
      'kind': kind, 'input': 'raw' if raw else 'features', 'nas': nas,
      'transfer': transfer, 'config': cfg})


def with_model(variant: str | None, model: str) -> str:
  """`variant` plus `model=<model>`, for the training configs that hold a
  table of models (`train/cifar10_large.py:quick,model=resnet50`)."""
  return ','.join(v for v in (variant, f'model={model}') if v)


def has_speech_commands() -> bool:
  d = os.environ.get('TINYROBUST_DATA_DIR')
  return bool(d) and os.path.exists(
      os.path.join(d, 'speech_commands_v002_testset.npz'))


def add_kws(c, *, quick: bool) -> None:
  """The keyword-spotting task on MFCCs (speakers held out)."""
  kws = data_config('speech_commands', epochs=6 if quick else 30, lr=3e-3,
                    batch_size=64, features='mfcc')
  c.tasks.kws = task('mfcc', (0.0, 0.25, 0.5, 1.0, 2.0))
  m = c.tasks.kws.models
  m.dscnn = entry(kws, 'tiny', 'dscnn')
  m.kws_cnn = entry(kws, 'large', 'kws_cnn')
  m.kws_lstm = entry(kws, 'large', 'kws_lstm')
