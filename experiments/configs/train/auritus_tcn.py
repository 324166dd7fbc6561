r"""TCN (keras-tcn) on raw AURITUS IMU windows, participants held out.

Command:
  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/auritus_tcn.py:quick \
      --workdir=/tmp/tinyrobust/auritus_tcn
Variants: `quick` (15 epochs on 550/150 windows, ~6 min on a loaded 2-core
CPU), `full` / default (100 epochs on the study's 550/50 windows). Measured
(quick, seed 0, on a 2-core CPU shared at load ~9): 0.530 test / 0.530 val
(1,434 test windows, 349 s wall) (held-out participants; the study's 93.0%
used a leaky random window split).
Inputs: [N, 550, 6] acc/gyro windows standardised per channel with train
statistics, as `search_tcn_auritus.py` (eps in train-std units; the study's
eps 0.4 in raw units is `--config.data.options.normalisation=none`).
Model: 4 filters, kernel 4, dilations 1..64, skip connections: 1,057 params
(study: 1.06k), receptive field 763 steps >= the 550-step window.
"""

from experiments.configs import common


def get_config(arg=None):
  c = common.auritus_training(arg, channels='raw6', learning_rate=3e-3,
                              quick_epochs=15, quick_batch_size=32)
  c.model.name = 'tcn'
  c.model.kwargs.nb_filters = 4
  c.model.kwargs.kernel_size = 4
  c.model.kwargs.dilations = (1, 2, 4, 8, 16, 32, 64)
  c.model.kwargs.nb_stacks = 1
  c.model.kwargs.padding = 'causal'
  c.model.kwargs.use_skip_connections = True
  return c
