r"""ResNet8 (MLPerf Tiny image classification) on CIFAR-10.

Command:
  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/cifar10_resnet8.py:quick \
      --workdir=/tmp/tinyrobust/cifar10_resnet8
Variants: `quick` (5 epochs on the offline 10k-image subset, ~8 min on a
loaded 2-core CPU), `full` / default (500 epochs like MLPerf Tiny, Adam 1e-3,
crop+flip; use a GPU and TFDS's 50k images for the study's 87.1%). Measured
(quick, seed 0, on a 2-core CPU shared at load ~9): 0.553 test / 0.570 val
(2,000 test images, 488 s wall) (2,000 official test images; the offline
images are JPEG-decoded, see the data README). Inputs [N, 32, 32, 3] in [0,
1]: eps in pixel units (x/255).
Model: the MLPerf Tiny reference, 78,666 params incl. BN statistics.
"""

from experiments.configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, flags=('quick', 'full'))
  c = common.base_config()
  c.data.name = 'cifar10'
  c.data.options.seed = 0
  c.data.augment = 'crop_flip'
  c.model.name = 'resnet8'
  c.train.epochs = 500
  c.train.batch_size = 32
  c.train.learning_rate = 1e-3
  c.train.weight_decay = 1e-4
  if args.quick:
    c.train.epochs = 5
    c.train.batch_size = 64
    c.train.learning_rate = 3e-3
  return c
