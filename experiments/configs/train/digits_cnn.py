r"""Small CNN on scikit-learn digits (built-in, offline): the default job.

Command:
  python -m experiments.main --config=experiments/configs/train/digits_cnn.py \
      --workdir=/tmp/tinyrobust/digits_cnn
Variants: `digits_cnn.py:quick` (3 epochs, ~10 s on a 2-core CPU),
default (15 epochs, ~10 s). Measured (seed 0, CPU): quick test accuracy
0.900, default test accuracy 0.986 (tests/test_train.py re-runs quick and
checks this figure). Split: stratified 70/10/20 train/val/test of the 1,797 images,
seed 0; test accuracy is that of the best-on-validation epoch. Inputs are
[N, 8, 8, 1] in [0, 1], so attack eps is in pixel-intensity units.
"""

from experiments.configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, flags=('quick', 'full'))
  c = common.base_config()
  c.data.name = 'digits'
  c.data.options.seed = 0
  c.model.name = 'cnn'
  c.model.kwargs.features = (32, 64)
  c.train.epochs = 15
  c.train.batch_size = 32
  c.train.learning_rate = 3e-3
  if args.quick:
    c.train.epochs = 3
  return c
