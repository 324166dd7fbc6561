r"""keras.applications models on CIFAR-10 (`common.cifar10_large`).

Command:
  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/cifar10_large.py:quick,model=resnet50 \
      --workdir=/tmp/tinyrobust/cifar10_resnet50
`model=` (required) is one of `MODELS`:

  model              size  quick MACs  full MACs  GPU min/epoch  finetune  study
  efficientnet_b0     224        8.1M       386M           ~1      ~10 min  93.2%
  efficientnet_b4     380       32.5M      4.39G           ~5      ~50 min  93.5%
  efficientnetv2_b0   224       14.5M       713M           ~1      ~12 min  96.7%
  efficientnetv2_b3   300       32.2M      2.99G           ~3      ~30 min  97.0%
  resnet50            224       60.3M      3.70G         ~1.5      ~15 min  89.7%
  vgg19               224        309M      18.8G           ~3      ~30 min  92.3%

(size: the ImageNet resolution of `full` and `finetune`; MACs per image;
GPU times are estimates for 50k images on one A100-class GPU in float32 from
the MACs, not measured; study: the study's transfer-learned test accuracy.)
Variants (with `model=`, comma-separated):
* `quick`: 3 epochs of Adam from scratch at 32x32 on the offline 10k-image
  subset (this CPU). Measured for efficientnet_b0 only (seed 0, on a 2-core
  CPU shared at load ~8): 0.3135 test / 0.325 val (2,000 test images), 9.5
  min wall; with Keras' BN momentum 0.99 instead of the variant's 0.9 the
  running statistics lag: 0.2155 test. The others: not measured here.
* `full` / default: 100 epochs of SGD from scratch at the model's size
  (images resized inside the model; use a GPU). Accuracy not measured here;
  from scratch expect less than the study's transfer-learned accuracy.
* `finetune`: the study's transfer learning from ImageNet, 10 epochs of SGD
  (0.01) at the model's size, from the file that
  `keras.applications.<Class>(weights='imagenet', include_top=False)`
  downloads (`MODELS[model].weights` in ~/.keras/models/), given as
  `--config=<this file>:finetune,model=<model>
  --config.model.kwargs.keras_weights=<path>` (the backbone loads in the
  model's `data_init` hook, the Dense head starts random). Expect about the
  study's accuracy on the official test set (not measured here).
Inputs [N, 32, 32, 3] in [0, 1] in every variant (eps in pixel units /
255); the Keras preprocessing runs inside the model (`models.imagenet`).
"""

import dataclasses

from experiments.configs import common

VARIANTS = ('quick', 'full', 'finetune')


@dataclasses.dataclass(frozen=True)
class Large:
  """One row of the table above."""
  keras_class: str
  image_size: int     # ImageNet resolution of `full` / `finetune`
  weights: str        # keras.applications' *_notop.h5 file name
  study_accuracy: float  # the study's transfer-learned test accuracy (%)


MODELS = {
    'efficientnet_b0': Large('EfficientNetB0', 224,
                             'efficientnetb0_notop.h5', 93.2),
    'efficientnet_b4': Large('EfficientNetB4', 380,
                             'efficientnetb4_notop.h5', 93.5),
    'efficientnetv2_b0': Large('EfficientNetV2B0', 224,
                               'efficientnetv2-b0_notop.h5', 96.7),
    'efficientnetv2_b3': Large('EfficientNetV2B3', 300,
                               'efficientnetv2-b3_notop.h5', 97.0),
    'resnet50': Large(
        'ResNet50', 224,
        'resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5', 89.7),
    'vgg19': Large('VGG19', 224,
                   'vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5',
                   92.3),
}


def get_config(arg=None):
  args = common.parse_arg(arg, flags=VARIANTS,
                          options={'model': tuple(MODELS)},
                          exclusive=(VARIANTS,))
  if 'model' not in args:
    raise ValueError(f'cifar10_large.py needs a model= variant, got '
                     f'{arg!r}; valid: model={"|".join(MODELS)} (e.g. '
                     f'`cifar10_large.py:quick,model=resnet50`).')
  variant = ','.join(v for v in VARIANTS if args[v])
  return common.cifar10_large(variant, args.model,
                              image_size=MODELS[args.model].image_size)
