r"""Hello Edge GRU(400) (499,212 params) on Speech Commands MFCCs: `common.speech_commands_large`.

  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/speech_commands_kws_gru.py:quick \
      --workdir=/tmp/tinyrobust/speech_commands_kws_gru
"""

from experiments.configs import common


def get_config(arg=None):
  return common.speech_commands_large(arg, 'kws_gru', learning_rate=1e-3)
