r"""The robustness study's keyword-spotting task on Speech Commands.

Command:
  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --mode=study --config=experiments/configs/study/kws.py:quick \
      --workdir=/tmp/tinyrobust/study_kws
Models (Table 1 of the study): tiny DS-CNN (MLPerf Tiny) and TCN; large CNN,
GRU and LSTM (Hello Edge); the study's Attention RNN is not in the zoo yet. Each
trains as its own training command does (`train/speech_commands_<model>.py`;
the large ones `train/speech_commands_large.py:model=kws_<model>`). Offline only the official test set exists; it is split by
speaker (0.7/0.1/0.2), so no speaker is in two splits. Inputs: [N, 49, 10]
MFCCs (the MLPerf Tiny front-end); eps in MFCC units, the model's input as in
the study. Variants: `quick` (this CPU: 3 epochs per model, FGSM, PGD-10, AutoAttack (`parts.AUTOATTACK_QUICK`)
over 5 eps values on 400 seeded test clips), default / `full` (each training config's schedule; use a
GPU).
Transfer and universal (issue 25, `parts.transfer_sections`): PGD and
MI-FGSM (10 steps) crafted on every model and on the tiny and large
ensembles, judged by every model and its int8 LiteRT export; SGD-UAP per
model at two eps. `noaa`: without AutoAttack.
`signal` (the attacker's own units, issue 25): the perturbation is added to
the waveform (full scale 1) in front of each model's MFCC front-end
(`task.space='signal'`), eps are SNR budgets in dB per clip (40, 30, 20 and
10 dB; the L-inf radius of clip i is rms(x_i) * 10^(-dB/20), reported
beside each dB in waveform units), universal perturbations at 30 and 20 dB
(one radius: against the training clips' mean rms).
`small` (with quick): DS-CNN and TCN (tiny), CNN and GRU (large; two of
each, so both ensembles exist), 5 epochs each, 200 test clips, transfer by
PGD only, one SGD-UAP epoch, no TFLM measurement (a loaded 2-core CPU).

Command of the signal-space study (issue 25):
  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --mode=study --config=experiments/configs/study/kws.py:quick,noaa,small,signal \
      --workdir=/tmp/tinyrobust/study_kws_signal
"""

from experiments.configs import common
from experiments.configs.study import parts


def get_config(arg=None):
  args = common.parse_arg(arg, flags=('quick', 'full', 'noaa', 'small',
                                      'signal'))
  q = args.quick
  variant = 'quick' if q else None
  short = {'epochs': 5 if args.small else 3} if q else None
  c = parts.study_base(quick=q, autoattack=not args.noaa)
  parts.transfer_sections(c, quick=q, universal_eps=(
      (30.0, 20.0) if args.signal else (0.5, 2.0)))
  # The recurrent models' backward pass (LSTM(500) over 49 frames) holds
  # every step's activations: 64 clips per attacked bucket fit in ~2 GB
  # (the scheduler attacks one eps at a time, steps host-driven).
  c.attack.batch_size = 64
  if q:
    c.attack.max_examples = 400
  c.tasks.kws = parts.task('mfcc', (0.0, 0.25, 0.5, 1.0, 2.0) if q else
                           (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0))
  if args.signal:  # the waveform, SNR budgets in dB (descending)
    c.tasks.kws = parts.task('dB', (40.0, 30.0, 20.0, 10.0))
    c.tasks.kws.space = 'signal'
  m = c.tasks.kws.models
  m.dscnn = parts.from_train('tiny', 'speech_commands_dscnn', variant,
                             train=short, raw=False)
  m.tcn = parts.from_train('tiny', 'speech_commands_tcn', variant,
                           train=short, raw=False)
  for name in ('kws_cnn', 'kws_gru', 'kws_lstm'):
    m[name] = parts.from_train('large', 'speech_commands_large',
                               parts.with_model(variant, name), train=short,
                               raw=False)
  if args.small:  # issue 25's transfer run on a loaded 2-core CPU
    del m['kws_lstm']
    c.attack.max_examples = 200
    c.hardware.measure = False
    c.attack.universal.epochs = 1
    # PGD only (the white-box attack, so the diagonal is checked): each
    # transfer attack costs ~4x the white-box PGD sweep of every model
    # (every source plus both ensembles). Add 'mi-fgsm' back with
    # --config.attack.transfer.attacks=pgd,mi-fgsm (its units only are new).
    c.attack.transfer.attacks = ('pgd',)
    del c.attack.transfer.options['mi-fgsm']
  return c
