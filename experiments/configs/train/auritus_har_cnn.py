r"""The study's HAR six-conv CNN (3,036,041 params) on raw AURITUS windows, participants held out.

Command:
  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/auritus_har_cnn.py:quick \
      --workdir=/tmp/tinyrobust/auritus_har_cnn
Variants (see `common.auritus_training`): `quick` (10 epochs on 550/150
windows), `full` / default (100 epochs on the study's 550/50 windows; use
a GPU). Held-out participants (the study's random window split leaks
windows of one recording into train and test). Inputs: [N, 550, 6] acc/gyro
windows standardised per channel with train statistics (eps in train-std
units).
"""

from experiments.configs import common


def get_config(arg=None):
  c = common.auritus_training(arg, channels='raw6', learning_rate=1e-3,
                              quick_epochs=10, quick_batch_size=32)
  c.model.name = 'har_cnn'
  c.train.grad_clip_norm = 1.0
  return c
