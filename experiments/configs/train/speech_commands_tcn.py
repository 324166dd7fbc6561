r"""TCN (keras-tcn) on Speech Commands MFCC (12 classes), speakers held out.

Command:
  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/speech_commands_tcn.py:quick \
      --workdir=/tmp/tinyrobust/speech_commands_tcn
Variants: `quick` (30 epochs, ~3 min on a 2-core CPU), `full` / default (100
epochs). Offline, only the official test set exists, split here by speaker
(train/val/test 0.7/0.1/0.2). Measured (quick, seed 0, on a 2-core CPU shared
at load ~9): 0.631 test / 0.649 val (888 test clips, 131 s wall) (the study's
76.0% trained on the full training set). Inputs: [N, 49, 10] MFCC (MLPerf
Tiny front-end) as 49 time steps of 10 channels; eps in MFCC units.
Model: 25 filters, kernel 3, dilations 1..16, skip connections, batch norm
(keras-tcn `use_batch_norm`): 18,962 trainable params (study: 0.019M),
receptive field 125 >= 49 frames.
"""

from experiments.configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, flags=('quick', 'full'))
  c = common.base_config()
  common.speech_commands_data(c)
  c.model.name = 'tcn'
  c.model.kwargs.nb_filters = 25
  c.model.kwargs.kernel_size = 3
  c.model.kwargs.dilations = (1, 2, 4, 8, 16)
  c.model.kwargs.padding = 'causal'
  c.model.kwargs.use_skip_connections = True
  c.model.kwargs.dropout_rate = 0.1
  # MFCCs are not standardised (c0 spans hundreds): without normalisation
  # the TCN stays at chance; keras-tcn's batch-norm option fixes it.
  c.model.kwargs.use_batch_norm = True
  c.train.epochs = 100
  c.train.learning_rate = 3e-3
  if args.quick:
    c.train.epochs = 30
  return c
