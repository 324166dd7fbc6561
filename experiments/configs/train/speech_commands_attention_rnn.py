r"""de Andrade et al.'s attention RNN (179,975 variables on 40 log-mel bins)
on Speech Commands log-mel frames `[N, 49, 40]`: `common.speech_commands_large`.

  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --config=experiments/configs/train/speech_commands_attention_rnn.py:quick \
      --workdir=/tmp/tinyrobust/speech_commands_attention_rnn
The study fed it 80 mel bins from kapre's on-graph STFT; here the log-mel
front-end (`tinyrobust.data.audio`, 40 bins) runs in the data pipeline, so
its eps is in log-mel units, not the MFCC units of the other KWS models:
compare it with them in the signal space (`threat.space='signal'`, eps on
the waveform).
"""

from experiments.configs import common


def get_config(arg=None):
  return common.speech_commands_large(arg, 'attention_rnn',
                                      learning_rate=1e-3, features='logmel')
