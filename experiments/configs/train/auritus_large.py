r"""The study's large HAR models on raw AURITUS windows (`common.auritus_large`).

Command:
  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/auritus_large.py:quick,model=har_cnn \
      --workdir=/tmp/tinyrobust/auritus_har_cnn
`model=` (required) is one of `MODELS`:

  model         architecture                       params     learning rate
  har_cnn       six-conv CNN                       3,036,041  1e-3
  har_cnn_lstm  CNN + bidirectional LSTM(128)      1,744,137  1e-3
  har_lstm      two-layer LSTM(128)                  201,865  3e-3

Variants (with `model=`): `quick` (10 epochs of batch 32 on 550/150
windows, this CPU), `full` / default (100 epochs on the study's 550/50
windows; use a GPU). Participants are held out; windows are standardised
per channel with train statistics (eps in train-std units). Runtime and
accuracy of these variants: not measured here. The quick study
(`study/har.py:quick`: 5 epochs, the CNN at 32 filters, 605,705 params)
measured 0.6674 test accuracy for har_cnn and 0.5363 for har_lstm (1,434
test windows; README results).
"""

from experiments.configs import common

Large = common.Large

MODELS = {
    'har_cnn': Large(3_036_041, 1e-3),
    'har_cnn_lstm': Large(1_744_137, 1e-3),
    'har_lstm': Large(201_865, 3e-3),
}


def get_config(arg=None):
  return common.large_family(arg, MODELS, common.auritus_large,
                             'auritus_large.py')
