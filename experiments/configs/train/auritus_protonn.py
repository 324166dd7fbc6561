r"""ProtoNN (EdgeML) on AURITUS window features, participants held out.

Command:
  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/auritus_protonn.py:quick \
      --workdir=/tmp/tinyrobust/auritus_protonn
Variants: `quick` (30 epochs on 550/150 windows, ~1-2 min on a 2-core CPU),
`full` / default (100 epochs on the study's 550/50 windows, a few minutes on
CPU). Measured (quick, seed 0, on a 2-core CPU shared at load ~9): 0.660 test
/ 0.671 val (1,434 test windows, 87 s wall) (held-out participants; the
study's 72.0% used a leaky random window split).
Inputs: the 10 hand-made window features (min, max, range, variance, std of
the acc and gyro magnitudes) standardised with train statistics, so eps is
in train-standard-deviation units (feature-space attack, as the study).
Model: d=5, m=40 (610 params, study 620), prototypes by k-means, gamma by the
median heuristic.
"""

from experiments.configs import common


def get_config(arg=None):
  c = common.auritus_training(arg, channels='features', learning_rate=1e-2)
  c.model.name = 'protonn'
  c.model.kwargs.projection_dim = 5
  c.model.kwargs.num_prototypes = 40
  return c
