r"""The study's HAR six-conv CNN (3,036,041 params) on raw AURITUS windows: `common.auritus_large`.

  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/auritus_har_cnn.py:quick \
      --workdir=/tmp/tinyrobust/auritus_har_cnn
"""

from experiments.configs import common


def get_config(arg=None):
  return common.auritus_large(arg, 'har_cnn', learning_rate=1e-3)
