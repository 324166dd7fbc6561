r"""The study's HAR two-layer LSTM(128) (201,865 params) on raw AURITUS windows: `common.auritus_large`.

  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/auritus_har_lstm.py:quick \
      --workdir=/tmp/tinyrobust/auritus_har_lstm
"""

from experiments.configs import common


def get_config(arg=None):
  return common.auritus_large(arg, 'har_lstm', learning_rate=3e-3)
