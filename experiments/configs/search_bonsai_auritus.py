r"""Robust MCU-aware search of Bonsai on AURITUS window features (Table 2).

Command:
  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --mode=search --config=experiments/configs/search_bonsai_auritus.py:quick \
      --config.search.board=stm32f446re --workdir=/tmp/tinyrobust/nas_bonsai
Variants (comma-separated `arg`): `quick` (8 candidates of 5 epochs, final
retrain 20 epochs: a few minutes on 2 CPU cores), `noadv` (l5 = 0; same as
--config.search.adversarial_weight=0). Default: 5 random + 50 GP candidates,
30 epochs each, final retrain 100 epochs.

Space: tree depth 0..4, projection dimension 2..20, branching sigma 0.1..10
(log), Z density 0.2..1 (IHT sparsity). Inputs: the 10 window features
(standardised), attacked in feature space as the study did, FGSM eps 0.4 in
train-std units. Float32 costs (the study's Bonsai was a float model).
"""

from experiments.configs import common
from tinyrobust.nas import search


def get_config(arg=None):
  variants = search.parse_variants(arg)
  c = common.base_config()
  common.auritus_data(c, channels='features')
  c.model.name = 'bonsai'
  c.train.epochs = 100
  c.train.batch_size = 64
  c.train.learning_rate = 1e-2
  c.train.progress_bar = False
  c.search = search.default_search_config()
  c.search.space = 'bonsai'
  c.search.board = 'stm32f446re'
  c.search.precision = 'float32'
  c.search.sram_gate = 'tflm'
  c.search.flash_proxy = 'tflite'
  c.search.eps = 0.4
  c.search.num_trials = 55
  c.search.trial_epochs = 30
  if 'noadv' in variants:
    c.search.adversarial_weight = 0.0
  if 'quick' in variants:
    c.search.num_trials = 8
    c.search.n_initial_points = 3
    c.search.trial_epochs = 5
    c.search.max_attack_examples = 1000
    c.search.n_acq_points = 1000
    c.train.epochs = 20
  return c
