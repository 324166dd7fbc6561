r"""FastGRNN (EdgeML) on raw AURITUS IMU windows, participants held out.

Command:
  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/auritus_fastgrnn.py:quick \
      --workdir=/tmp/tinyrobust/auritus_fastgrnn
Variants: `quick` (30 epochs of batch 32 on 550/150 windows at 100 Hz, ~7 min
on a loaded 2-core CPU), `full` / default (100 epochs on the study's 550/50
windows; use a GPU). Measured (quick, seed 0, on a 2-core CPU shared at load
~9): 0.495 test / 0.631 val (1,434 test windows, 436 s wall) (held-out
participants; the study's 98.6% used a leaky random window split).
Inputs: [N, 550, 6] raw acc (g) / gyro (deg/s) windows standardised per
channel with train statistics (tanh cells saturate on +-500 deg/s inputs),
so eps is in train-standard-deviation units per channel.
Model: hidden 10 (281 params with the dense head; SPEC table:
300), EdgeML gate initialisation, full rank, dense.
"""

from experiments.configs import common


def get_config(arg=None):
  c = common.auritus_training(arg, channels='raw6', learning_rate=1e-2,
                              quick_batch_size=32)
  c.model.name = 'fastgrnn'
  c.model.kwargs.hidden_size = 10
  c.train.grad_clip_norm = 1.0
  return c
