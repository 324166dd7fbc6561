r"""keras.applications ResNet50 on CIFAR-10 (`common.cifar10_large`).

Command:
  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/cifar10_resnet50.py:quick \
      --workdir=/tmp/tinyrobust/cifar10_resnet50
Variants:
* `quick`: 3 epochs of Adam from scratch at 32x32 on the offline 10k-image
  subset (this CPU; 60.3M MACs per image). Not measured here.
* `full` / default: 100 epochs of SGD from scratch at 224x224 (images
  resized inside the model; 3.70G MACs per image; use a GPU: estimated
  ~1.5 min per epoch of 50k images on one A100-class GPU in float32, from
  the MACs, not measured). Accuracy not measured here; from scratch expect
  less than the study's transfer-learned 89.7%.
* `finetune`: the study's transfer learning from ImageNet, 10 epochs of SGD
  (0.01) at 224x224, from the file that
  `keras.applications.ResNet50(weights='imagenet', include_top=False)`
  downloads
  (~/.keras/models/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5),
  given as `--config=<this file>:finetune
  --config.model.kwargs.keras_weights=<path>`
  (the backbone loads in the model's `data_init` hook, the Dense head
  starts random). Estimated ~15 min in all on a GPU; expect about the
  study's 89.7% on the official test set (not measured here).
Inputs [N, 32, 32, 3] in [0, 1] in every variant (eps in pixel units /
255); the Keras preprocessing runs inside the model (`models.imagenet`).
"""

from experiments.configs import common


def get_config(arg=None):
  return common.cifar10_large(arg, 'resnet50', image_size=224)
