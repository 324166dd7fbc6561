r"""keras.applications EfficientNetB0 (include_top=False + Dense head) on CIFAR-10.

Command:
  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/cifar10_efficientnet_b0.py:quick \
      --workdir=/tmp/tinyrobust/cifar10_efficientnet_b0
Variants (see `common.cifar10_large`): `quick` (3 epochs of Adam at 32x32
on the offline 10k-image subset), default / `full` (100 epochs of SGD at
224x224, images resized inside the model; use a GPU). The study
transfer-learned ImageNet weights; trained weights from Keras import with
`tinyrobust.models.keras_import.load('efficientnet_b0', path)`. Inputs [N, 32, 32, 3]
in [0, 1]; eps in pixel units (x/255).
"""

from experiments.configs import common


def get_config(arg=None):
  return common.cifar10_large(arg, 'efficientnet_b0', image_size=224)
