r"""keras.applications EfficientNetV2B0 on CIFAR-10 (full: 224x224): `common.cifar10_large`.

  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/cifar10_efficientnetv2_b0.py:quick \
      --workdir=/tmp/tinyrobust/cifar10_efficientnetv2_b0
"""

from experiments.configs import common


def get_config(arg=None):
  return common.cifar10_large(arg, 'efficientnetv2_b0', image_size=224)
