r"""The robustness study on built-in offline data: the README's main job.

Command:
  python -m experiments.main --mode=study \
      --config=experiments/configs/study/builtin.py:quick \
      --workdir=/tmp/tinyrobust/study_builtin
Tasks: `image` on scikit-learn digits ([N, 8, 8, 1] in [0, 1]; eps in
pixel/255) and `har` on sktime BasicMotions ([N, 100, 6] smart-watch IMU,
standardised with train statistics; eps in train-std). TinyML models: a
small CNN and MLP (image), FastGRNN and a TCN (har); large models: wide CNN
and MLP (image), a wide 1-D CNN and a two-layer LSTM (har), each 30-600x the
tiny models' parameters (Table 1 lists them). With `TINYROBUST_DATA_DIR`
holding the Speech Commands copy, the `kws` task (DS-CNN vs a CNN and an
LSTM on MFCCs) joins. Variants: `quick` (few epochs, FGSM and PGD-10 over 5
eps values), default (longer training, 7 eps values, AutoAttack with the
standard budget too).
"""


from experiments.configs import common
from experiments.configs.study import parts


def get_config(arg=None):
  args = common.parse_arg(arg, flags=('quick', 'full'))
  q = args.quick
  # AutoAttack only in the default variant: its four stages' compiles alone
  # (about 3 minutes per model on a loaded 2-core CPU) would triple the
  # README's three-minute quick job.
  c = parts.study_base(quick=q, autoattack=not q)
  digits = parts.data_config('digits', epochs=12 if q else 30, lr=3e-3,
                             batch_size=32)
  fast = {'learning_rate': 1e-2}  # small models train better with a higher rate
  c.tasks.image = parts.task(
      'pixel/255', (0.0, 4.0, 8.0, 16.0, 32.0) if q else
      (0.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0))
  m = c.tasks.image.models
  m.cnn_tiny = parts.entry(digits, 'tiny', 'cnn', raw=True, train=fast,
                          features=(4, 8))
  m.mlp_tiny = parts.entry(digits, 'tiny', 'mlp', raw=True, train=fast,
                          hidden=(16,))
  m.cnn_wide = parts.entry(digits, 'large', 'cnn', raw=True,
                              features=(64, 128))
  m.mlp_wide = parts.entry(digits, 'large', 'mlp', raw=True,
                              hidden=(512, 512))
  motions = parts.data_config('basic_motions', epochs=60 if q else 150,
                              lr=3e-3, batch_size=8)
  c.tasks.har = parts.task('train-std', (0.0, 0.1, 0.2, 0.4, 0.8) if q else
                           (0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6))
  m = c.tasks.har.models
  m.fastgrnn = parts.entry(motions, 'tiny', 'fastgrnn', raw=True, train=fast,
                           hidden_size=8)
  m.tcn = parts.entry(motions, 'tiny', 'tcn', raw=True, train=fast,
                      nb_filters=4, kernel_size=3, dilations=(1, 2, 4, 8))
  m.cnn_wide = parts.entry(motions, 'large', 'cnn', raw=True,
                           features=(64, 128), kernel_size=5)
  m.lstm = parts.entry(motions, 'large', 'har_lstm', raw=True,
                       input_shape=(100, 6))
  if parts.has_speech_commands():
    parts.add_kws(c, quick=q)
  return c
