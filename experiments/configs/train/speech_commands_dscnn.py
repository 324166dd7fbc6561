r"""DS-CNN (MLPerf Tiny KWS) on Speech Commands MFCC, speakers held out.

Command:
  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/speech_commands_dscnn.py:quick \
      --workdir=/tmp/tinyrobust/speech_commands_dscnn
Variants: `quick` (10 epochs, ~11 min on a loaded 2-core CPU), `full` /
default (100 epochs, Adam 1e-3 with cosine decay, as MLPerf's 36-epoch
schedule is for the full 85k-clip training set). Offline, only the official
test set exists, split here by speaker (0.7/0.1/0.2). Measured (quick, seed 0,
on a 2-core CPU shared at load ~9): 0.809 test / 0.794 val (888 test clips,
677 s wall) (the study's 92.2% trained on the full training set). Inputs: [N,
49, 10] MFCC; eps in MFCC units.
Model: the MLPerf Tiny reference, 24,908 params incl. BN statistics.
"""

from experiments.configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, flags=('quick', 'full'))
  c = common.base_config()
  common.speech_commands_data(c)
  c.model.name = 'dscnn'
  c.train.epochs = 100
  c.train.learning_rate = 3e-3
  c.train.weight_decay = 1e-4
  if args.quick:
    c.train.epochs = 10
  return c
