r"""FastRNN (EdgeML) on raw AURITUS IMU windows, participants held out.

Command:
  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/auritus_fastrnn.py:quick \
      --workdir=/tmp/tinyrobust/auritus_fastrnn
Variants: `quick` (30 epochs of batch 32 on 550/150 windows at 100 Hz, ~3 min
on a loaded 2-core CPU), `full` / default (100 epochs on the study's 550/50
windows; use a GPU). Measured (quick, seed 0, on a 2-core CPU shared at load
~9): 0.485 test / 0.520 val (1,434 test windows, 151 s wall) (held-out
participants; the study's 95.0% used a leaky random window split).
Inputs: [N, 550, 6] raw acc (g) / gyro (deg/s) windows standardised per
channel with train statistics (tanh cells saturate on +-500 deg/s inputs),
so eps is in train-standard-deviation units per channel.
Model: hidden 6 (143 params with the dense head; SPEC table:
150), EdgeML gate initialisation, full rank, dense.
"""

from experiments.configs import common


def get_config(arg=None):
  c = common.auritus_training(arg, channels='raw6', learning_rate=1e-2,
                              quick_batch_size=32)
  c.model.name = 'fastrnn'
  c.model.kwargs.hidden_size = 6
  c.train.grad_clip_norm = 1.0
  return c
