r"""keras.applications EfficientNetV2B0 on CIFAR-10 (`common.cifar10_large`).

Command:
  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/cifar10_efficientnetv2_b0.py:quick \
      --workdir=/tmp/tinyrobust/cifar10_efficientnetv2_b0
Variants:
* `quick`: 3 epochs of Adam from scratch at 32x32 on the offline 10k-image
  subset (this CPU; 14.5M MACs per image). Not measured here.
* `full` / default: 100 epochs of SGD from scratch at 224x224 (images
  resized inside the model; 713M MACs per image; use a GPU: estimated
  ~1 min per epoch of 50k images on one A100-class GPU in float32, from
  the MACs, not measured). Accuracy not measured here; from scratch expect
  less than the study's transfer-learned 96.7%.
* `finetune`: the study's transfer learning from ImageNet, 10 epochs of SGD
  (0.01) at 224x224, from the file that
  `keras.applications.EfficientNetV2B0(weights='imagenet', include_top=False)`
  downloads (~/.keras/models/efficientnetv2-b0_notop.h5), given as
  `--config=<this file>:finetune --config.model.kwargs.keras_weights=<path>`
  (the backbone loads in the model's `data_init` hook, the Dense head
  starts random). Estimated ~12 min in all on a GPU; expect about the
  study's 96.7% on the official test set (not measured here).
Inputs [N, 32, 32, 3] in [0, 1] in every variant (eps in pixel units /
255); the Keras preprocessing runs inside the model (`models.imagenet`).
"""

from experiments.configs import common


def get_config(arg=None):
  return common.cifar10_large(arg, 'efficientnetv2_b0', image_size=224)
