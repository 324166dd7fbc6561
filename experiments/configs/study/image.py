r"""The robustness study's image task on CIFAR-10: TinyML vs large models.

Command:
  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --mode=study --config=experiments/configs/study/image.py:quick \
      --workdir=/tmp/tinyrobust/study_image
Models (Table 1 of the study): tiny ResNet8 (MLPerf Tiny) and MCUNet
(320 kB, made by NAS, transfer-learned in the study); large EfficientNetB0,
ResNet50 and VGG19 (transfer-learned from ImageNet in the study; here from
scratch unless a model's training config is given ImageNet weights). Each
model trains as its own training command does (`train/cifar10_<model>.py`;
the large ones `train/cifar10_large.py:model=<model>`). Inputs are [N, 32, 32, 3] in [0, 1]; the eps grid is in
pixel/255 (the study's 0-255 grid, `study.config.STUDY_IMAGE_EPS_PIXEL`).
Variants: `quick` (this CPU, a smoke-scale run, not a result to quote: the
models train 2 epochs at 32x32 on the offline 9k-image training subset,
except ResNet50 and VGG19 on a stratified 2,000 and 1,000 of those images
(`LARGE_QUICK_TRAIN`, `data.options.max_train`): on this 2-core CPU
ResNet50 took 11 min per epoch on all 9k images (its second, at load ~4)
and VGG19 has 5x its MACs (EfficientNetB0 trained on 1,000 stayed at
chance, 0.10); FGSM, PGD-10 and AutoAttack (`parts.AUTOATTACK_QUICK`)
on 100 test images over 5 eps values; before issue 22 it attacked 500 and
trained every model on all 9k images, and did not finish), default / `full`
(each training config's full schedule, all 2,000 test images, the study's
eps grid; use a GPU).
"""

from experiments.configs import common
from experiments.configs.study import parts
from tinyrobust.studies.robustness import config as study_config

# Training images of the large models in `quick` (0: all 9k).
LARGE_QUICK_TRAIN = {'efficientnet_b0': 0, 'resnet50': 2000, 'vgg19': 1000}


def get_config(arg=None):
  args = common.parse_arg(arg, flags=('quick', 'full'))
  q = args.quick
  variant = 'quick' if q else None
  short = {'epochs': 2} if q else None
  c = parts.study_base(quick=q)
  if q:
    c.attack.max_examples = 100
  c.tasks.image = parts.task(
      'pixel/255', (0.0, 1.0, 2.0, 4.0, 8.0) if q else
      study_config.STUDY_IMAGE_EPS_PIXEL)
  m = c.tasks.image.models
  m.resnet8 = parts.from_train('tiny', 'cifar10_resnet8', variant, train=short)
  m.mcunet = parts.from_train('tiny', 'cifar10_mcunet', variant, train=short,
                              nas=True, transfer=True)
  for name in ('efficientnet_b0', 'resnet50', 'vgg19'):
    m[name] = parts.from_train('large', 'cifar10_large',
                               parts.with_model(variant, name), train=short,
                               transfer=True)
    if q and LARGE_QUICK_TRAIN[name]:
      m[name].config.data.options.max_train = LARGE_QUICK_TRAIN[name]
  return c
