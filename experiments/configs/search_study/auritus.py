r"""The search study on AURITUS (the study's Table 2): TCN, ProtoNN, Bonsai
on three STM32 boards; hand-crafted vs search without vs with the
adversarial term vs the hand-crafted model adversarially trained, over
seeds.

Command:
  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --mode=search_study \
      --config=experiments/configs/search_study/auritus.py:quick \
      --workdir=/tmp/tinyrobust/search_study
Each model's searches use `experiments/configs/search/auritus.py` (its
`quick` variant for `quick`; the study's design, 5 random + 50 GP
candidates and the study's weights, for `full`), the hand-crafted baseline
the options of `experiments/configs/train/auritus_<model>.py`. Variants:
`quick` (this CPU; see `search/auritus.py:quick` for the budgets), `full`
(days on a CPU; hours on one GPU), `model=tcn|protonn|bonsai` (one family;
default all three), `board=<name>` (one board; default all three),
`seeds=N` (default 3). Runs are cached per (model, board, arm, seed) in
the workdir of one variant.
Participants are held out; eps as `search/auritus.py` states.
The fourth arm (`advtrain`) trains the hand-crafted model with PGD-AT at the
search's attack eps (0.4 train-std) for the final retrain's epochs: 10
steps of eps/4 (`full`), 3 steps of 0.83 eps (`quick`); any
`train.adversarial` field can be set in `search_study.adv_train`.
"""

import importlib

import ml_collections

from experiments.configs import common

MODELS = ('tcn', 'protonn', 'bonsai')
BOARDS = ('stm32f746zg', 'stm32f446re', 'stm32l476rg')


def get_config(arg=None):
  args = common.parse_arg(arg, flags=('quick', 'full'),
                          options={'seeds': ('1', '2', '3', '4', '5'),
                                   'model': MODELS + ('all',),
                                   'board': BOARDS + ('all',)},
                          defaults={'seeds': '3', 'model': 'all',
                                    'board': 'all'})
  search_cfg = importlib.import_module('experiments.configs.search.auritus')
  c = ml_collections.ConfigDict()
  models = MODELS if args.model == 'all' else (args.model,)
  c.search_study = ml_collections.ConfigDict({
      'models': models,
      'boards': BOARDS if args.board == 'all' else (args.board,),
      'n_seeds': int(args.seeds),
      'arms': ('handcrafted', 'noadv', 'adv', 'advtrain'), 'bootstrap': 1000,
      'claim_points': 9.0,
      'adv_train': {'method': 'pgd_at', 'steps': 3 if args.quick else 10},
      # k > 0: the advtrain arm's last k epochs int8-aware (tinyrobust.qat)
      'adv_train_qat_epochs': 0})
  c.searches = ml_collections.ConfigDict()
  c.handcrafted = ml_collections.ConfigDict()
  for m in models:
    variant = f'quick,model={m}' if args.quick else f'model={m}'
    c.searches[m] = search_cfg.get_config(variant)
    train_cfg = importlib.import_module(
        f'experiments.configs.train.auritus_{m}').get_config(None)
    c.handcrafted[m] = train_cfg.model.kwargs
  return c
