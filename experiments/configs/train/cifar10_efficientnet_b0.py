r"""keras.applications EfficientNetB0 on CIFAR-10 (`common.cifar10_large`).

Command:
  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/cifar10_efficientnet_b0.py:quick \
      --workdir=/tmp/tinyrobust/cifar10_efficientnet_b0
Variants:
* `quick`: 3 epochs of Adam from scratch at 32x32 on the offline 10k-image
  subset (this CPU; 8.1M MACs per image). Measured
  (seed 0, on a 2-core CPU shared at load ~8): 0.3135 test / 0.325 val
  (2,000 test images), 9.5 min wall; with Keras' BN momentum 0.99 instead
  of the variant's 0.9 the running statistics lag: 0.2155 test.
* `full` / default: 100 epochs of SGD from scratch at 224x224 (images
  resized inside the model; 386M MACs per image; use a GPU: estimated
  ~1 min per epoch of 50k images on one A100-class GPU in float32, from
  the MACs, not measured). Accuracy not measured here; from scratch expect
  less than the study's transfer-learned 93.2%.
* `finetune`: the study's transfer learning from ImageNet, 10 epochs of SGD
  (0.01) at 224x224, from the file that
  `keras.applications.EfficientNetB0(weights='imagenet', include_top=False)`
  downloads (~/.keras/models/efficientnetb0_notop.h5), given as
  `--config=<this file>:finetune --config.model.kwargs.keras_weights=<path>`
  (the backbone loads in the model's `data_init` hook, the Dense head
  starts random). Estimated ~10 min in all on a GPU; expect about the
  study's 93.2% on the official test set (not measured here).
Inputs [N, 32, 32, 3] in [0, 1] in every variant (eps in pixel units /
255); the Keras preprocessing runs inside the model (`models.imagenet`).
"""

from experiments.configs import common


def get_config(arg=None):
  return common.cifar10_large(arg, 'efficientnet_b0', image_size=224)
