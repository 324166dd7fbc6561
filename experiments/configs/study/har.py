r"""The robustness study's activity-recognition task on AURITUS earables.

Command:
  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --mode=study --config=experiments/configs/study/har.py:quick \
      --workdir=/tmp/tinyrobust/study_har
Models (Table 1 of the study): tiny ProtoNN and Bonsai (on the 10 window
features), FastRNN, FastGRNN and TCN (raw windows); large CNN, CNN-LSTM and
LSTM (raw windows). Each trains as its own training command does
(`train/auritus_<model>.py`; the large ones
`train/auritus_large.py:model=har_<model>`). Splits hold out
participants (the study's random window split leaks windows of one
recording into train and test). Inputs are standardised with training
statistics, so eps is in train-std units per channel or feature. Variants:
`quick` (this CPU: the training configs' quick windows; tiny models as
their quick configs, large models CNN and LSTM (no CNN-LSTM) for 5 epochs
with the CNN at 32 filters; FGSM, PGD-10 and AutoAttack (`parts.AUTOATTACK_QUICK`) on 200 test windows over 5 eps
values), default / `full`
(each training config's schedule; use a GPU).
Transfer and universal (issue 25, `parts.transfer_sections`): PGD (the
white-box options and key) and MI-FGSM (10 steps) crafted on every model and
on the tiny and large ensembles, judged by every model and its int8 LiteRT
export; SGD-UAP per model at 0.2 and 0.8 train-std,
quick: 2 epochs of 64-window batches, step 0.1 eps. `noaa`: without
AutoAttack. `small` (with quick): only FastGRNN and TCN (tiny) and the CNN
(large), one SGD-UAP epoch, no TFLM measurement (a loaded 2-core CPU).
"""

from experiments.configs import common
from experiments.configs.study import parts


def get_config(arg=None):
  args = common.parse_arg(arg, flags=('quick', 'full', 'noaa', 'small'))
  q = args.quick
  variant = 'quick' if q else None
  # quick: the tiny models train as their quick configs do (seconds to
  # minutes); the large ones get 5 epochs, far less than they would want.
  short = {'epochs': 5} if q else None
  c = parts.study_base(quick=q, autoattack=not args.noaa)
  parts.transfer_sections(c, quick=q, universal_eps=(0.2, 0.8))
  # 64 windows per attacked bucket keep the raw-window CNNs' activations
  # small (the scheduler attacks one eps at a time, steps host-driven).
  c.attack.batch_size = 64
  if q:
    c.attack.max_examples = 200
  c.tasks.har = parts.task('train-std', (0.0, 0.1, 0.2, 0.4, 0.8) if q else
                           (0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6))
  m = c.tasks.har.models
  for name, raw in (('protonn', False), ('bonsai', False), ('fastrnn', True),
                    ('fastgrnn', True), ('tcn', True)):
    m[name] = parts.from_train('tiny', f'auritus_{name}', variant, raw=raw)
  # quick: the CNNs at 32 filters (1/16 of the MACs of the study's 128) so
  # that they train on this CPU; Table 1 lists the parameters trained.
  narrow = {'filters': 32} if q else {}
  # quick leaves out the CNN-LSTM (its attack sweep alone takes ~20 min on
  # 2 cores); default/full has all three.
  large = ('har_cnn', 'har_lstm') if q else ('har_cnn', 'har_cnn_lstm',
                                             'har_lstm')
  for name in large:
    m[name] = parts.from_train('large', 'auritus_large',
                               parts.with_model(variant, name), train=short,
                               **(narrow if 'cnn' in name else {}))
  if args.small:  # issue 25's transfer run on a loaded 2-core CPU
    for name in ('protonn', 'bonsai', 'fastrnn', 'har_lstm'):
      del m[name]
    c.hardware.measure = False
    c.attack.universal.epochs = 1
  return c
