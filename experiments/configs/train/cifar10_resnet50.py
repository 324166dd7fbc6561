r"""keras.applications ResNet50 on CIFAR-10 (full: 224x224): `common.cifar10_large`.

  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/cifar10_resnet50.py:quick \
      --workdir=/tmp/tinyrobust/cifar10_resnet50
"""

from experiments.configs import common


def get_config(arg=None):
  return common.cifar10_large(arg, 'resnet50', image_size=224)
