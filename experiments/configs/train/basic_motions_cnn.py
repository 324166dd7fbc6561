r"""1-D CNN on sktime BasicMotions (built-in, offline smart-watch IMU data).

Command:
  python -m experiments.main --config=experiments/configs/train/basic_motions_cnn.py \
      --workdir=/tmp/tinyrobust/basic_motions_cnn
Variants: `:quick` (20 epochs, ~15 s on a 2-core CPU, test accuracy ~0.7),
default (60 epochs, ~25 s, test accuracy 0.975 = 39/40 at seed 0) on the
official 40-series TEST split (4 balanced classes); best-on-val epoch with an
8-series val split carved from TRAIN. Inputs [N, 100, 6] standardised with train statistics,
so eps is in train-standard-deviation units.
"""

from experiments.configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, flags=('quick', 'full'))
  c = common.base_config()
  c.data.name = 'basic_motions'
  c.data.options.seed = 0
  c.model.name = 'cnn'
  c.model.kwargs.features = (16, 32)
  c.model.kwargs.kernel_size = 5
  c.train.epochs = 60
  c.train.batch_size = 8
  c.train.learning_rate = 1e-3
  if args.quick:
    c.train.epochs = 20
  return c
