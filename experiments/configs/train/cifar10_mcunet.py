r"""MCUNet (320 kB or 256 kB configuration) on CIFAR-10, from scratch.

Command:
  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/cifar10_mcunet.py:quick \
      --workdir=/tmp/tinyrobust/cifar10_mcunet
Variants (comma-separated): `quick` (4 epochs on the offline 10k-image subset
at 32x32, ~17 min on a loaded 2-core CPU), `full` / default (200 epochs, SGD +
cosine, crop+flip; use a GPU), `256kb` (the 256 kB / 1 MB configuration
instead of 320 kB / 1 MB), `upscale` (resize inputs to the backbone's search
resolution, 176 or 160, inside the model: ~30x the FLOPs). The study transfer-
learned ImageNet weights (87.7% / 87.5%); no pretrained weights here, so
expect much lower accuracy, especially at 32x32 where the stride-32 backbone
ends on a 1x1 map. Measured (quick, seed 0, 320 kB, on a 2-core CPU shared at
load ~9): 0.226 test / 0.245 val (2,000 test images, 993 s wall); 256 kB
(`quick,256kb`): 0.265 test / 0.255 val. Inputs [N, 32, 32, 3] in [0, 1].
Model: 578,018 (320 kB) / 570,002 (256 kB) trainable params.
"""

from experiments.configs import common
from tinyrobust.models import mcunet as mcunet_lib


def get_config(arg=None):
  args = common.parse_arg(arg, flags=('quick', 'full', '256kb', 'upscale'))
  name = 'mcunet-256kb' if args['256kb'] else 'mcunet-320kb'
  c = common.base_config()
  c.data.name = 'cifar10'
  c.data.options.seed = 0
  c.data.augment = 'crop_flip'
  c.model.name = 'mcunet'
  c.model.kwargs.config = name
  c.model.kwargs.dropout = 0.1
  if args.upscale:
    c.model.kwargs.resolution = mcunet_lib.VARIANTS[name][2]
  c.train.epochs = 200
  c.train.optimizer = 'sgd'
  c.train.learning_rate = 0.05
  c.train.momentum = 0.9
  c.train.weight_decay = 4e-5
  c.train.warmup_epochs = 2
  if args.quick:
    c.train.epochs = 4
    c.train.optimizer = 'adam'
    c.train.learning_rate = 3e-3
    c.train.warmup_epochs = 0
    c.train.weight_decay = 0.0
  return c
