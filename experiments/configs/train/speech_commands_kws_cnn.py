r"""Hello Edge CNN (94,604 params) on Speech Commands MFCCs: `common.speech_commands_large`.

  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/speech_commands_kws_cnn.py:quick \
      --workdir=/tmp/tinyrobust/speech_commands_kws_cnn
"""

from experiments.configs import common


def get_config(arg=None):
  return common.speech_commands_large(arg, 'kws_cnn', learning_rate=3e-3)
