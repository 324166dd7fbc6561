r"""The study's HAR CNN + bidirectional LSTM(128) (1,744,137 params) on raw AURITUS windows: `common.auritus_large`.

  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/auritus_har_cnn_lstm.py:quick \
      --workdir=/tmp/tinyrobust/auritus_har_cnn_lstm
"""

from experiments.configs import common


def get_config(arg=None):
  return common.auritus_large(arg, 'har_cnn_lstm', learning_rate=1e-3)
