r"""Hello Edge LSTM(500) (1,028,012 params) on Speech Commands MFCCs, speakers held out.

Command:
  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/speech_commands_kws_lstm.py:quick \
      --workdir=/tmp/tinyrobust/speech_commands_kws_lstm
Variants: `quick` (10 epochs on this CPU), `full` / default (100 epochs,
Adam with cosine decay). Offline, only the official test set exists, split
by speaker (0.7/0.1/0.2), as `speech_commands_dscnn.py`. Inputs: [N, 49,
10] MFCCs (MLPerf Tiny front-end); eps in MFCC units.
"""

from experiments.configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, flags=('quick', 'full'))
  c = common.base_config()
  common.speech_commands_data(c)
  c.model.name = 'kws_lstm'
  c.train.epochs = 10 if args.quick else 100
  c.train.learning_rate = 1e-3
  c.train.grad_clip_norm = 1.0
  return c
