r"""Hello Edge LSTM(500) (1,028,012 params) on Speech Commands MFCCs: `common.speech_commands_large`.

  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/speech_commands_kws_lstm.py:quick \
      --workdir=/tmp/tinyrobust/speech_commands_kws_lstm
"""

from experiments.configs import common


def get_config(arg=None):
  return common.speech_commands_large(arg, 'kws_lstm', learning_rate=1e-3)
