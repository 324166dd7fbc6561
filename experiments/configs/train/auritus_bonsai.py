r"""Bonsai (EdgeML) on AURITUS window features, participants held out.

Command:
  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/auritus_bonsai.py:quick \
      --workdir=/tmp/tinyrobust/auritus_bonsai
Variants: `quick` (30 epochs on 550/150 windows, ~1-2 min on a 2-core CPU),
`full` / default (100 epochs on the study's 550/50 windows). Measured (quick,
seed 0, on a 2-core CPU shared at load ~9): 0.673 test / 0.700 val (1,434 test
windows, 57 s wall) (held-out participants; the study's 72.6% used a leaky
random window split).
Inputs: the 10 standardised window features (eps in train-std units).
Model: depth 1, projection 10 (660 params, study 630), sigma 1; the
indicator sharpness sigma_I is annealed during training (EdgeML) and 1e9 at
evaluation (hard tree).
"""

from experiments.configs import common


def get_config(arg=None):
  c = common.auritus_training(arg, channels='features', learning_rate=1e-2)
  c.model.name = 'bonsai'
  c.model.kwargs.projection_dim = 10
  c.model.kwargs.depth = 1
  c.model.kwargs.sigma = 1.0
  return c
