r"""Hello Edge's large KWS models on Speech Commands MFCCs
(`common.speech_commands_large`).

Command:
  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/speech_commands_large.py:quick,model=kws_cnn \
      --workdir=/tmp/tinyrobust/speech_commands_kws_cnn
`model=` (required) is one of `MODELS`:

  model      architecture  params     learning rate
  kws_cnn    CNN               94,604  3e-3
  kws_gru    GRU(400)         499,212  1e-3
  kws_lstm   LSTM(500)      1,028,012  1e-3

Variants (with `model=`): `quick` (10 epochs, this CPU), `full` / default
(100 epochs of Adam with cosine decay); gradients clipped at norm 1.
Speakers are held out ([N, 49, 10] MFCCs, eps in MFCC units). Runtime and
accuracy of these variants: not measured here. The quick study
(`study/kws.py:quick`: 3 epochs) measured 0.3874 (kws_cnn), 0.6205
(kws_gru) and 0.6779 (kws_lstm) test accuracy (888 test clips; README
results).
"""

from experiments.configs import common

Large = common.Large

MODELS = {
    'kws_cnn': Large(94_604, 3e-3),
    'kws_gru': Large(499_212, 1e-3),
    'kws_lstm': Large(1_028_012, 1e-3),
}


def get_config(arg=None):
  return common.large_family(arg, MODELS, common.speech_commands_large,
                             'speech_commands_large.py')
