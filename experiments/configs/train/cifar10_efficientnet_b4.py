r"""keras.applications EfficientNetB4 on CIFAR-10 (full: 380x380): `common.cifar10_large`.

  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/cifar10_efficientnet_b4.py:quick \
      --workdir=/tmp/tinyrobust/cifar10_efficientnet_b4
"""

from experiments.configs import common


def get_config(arg=None):
  return common.cifar10_large(arg, 'efficientnet_b4', image_size=380)
