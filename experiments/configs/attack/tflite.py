r"""A bare `.tflite` flatbuffer attacked without its source model.

Command (the flatbuffer and a surrogate trained here; `surrogate` may also
be a Keras .h5/.keras file or a SavedModel directory, with
`--config.target.surrogate_model=<zoo model>` and, if needed,
`--config.target.surrogate_kwargs.<option>=...`):
  TINYROBUST_DATA_DIR=/work/shared/data python -m experiments.main \
      --mode=attack --workdir=/tmp/kws_tflite \
      --config=experiments/configs/attack/tflite.py:train=speech_commands_dscnn \
      --config.target.tflite=/path/to/kws_int8.tflite \
      --config.target.surrogate=/tmp/tinyrobust/speech_commands_dscnn

The argument `train=<name>` picks the training config
`experiments/configs/train/<name>.py` whose `data` section (dataset and
options: the preprocessing the flatbuffer's inputs were made with) and
`attack` section (eps grid in the data's units) are used; add `full` for
that config's full variant (its data options; default `quick`). Attacks:
'square' is driven on the flatbuffer's own LiteRT scores (Square with
`attack.options.square.queries` = 200 here: each query is one interpreter
call); every other listed attack is crafted white-box on the surrogate and
transferred (no surrogate: list only square). The eps grid is in the
flatbuffer's float input units (before its int8 input quantisation, which is
read from the file). Output: `<workdir>/tflite_results.json` (clean accuracy
in LiteRT, each route per eps, the per-example worst case over routes, wall
times), `tinyrobust.evaluation.tflite_target`.
"""

import importlib

import ml_collections

from experiments.configs import common

TRAIN_CONFIGS = ('auritus_bonsai', 'auritus_fastgrnn', 'auritus_fastrnn',
                 'auritus_protonn', 'auritus_tcn', 'basic_motions_cnn',
                 'cifar10_mcunet', 'cifar10_resnet8', 'digits_cnn',
                 'speech_commands_attention_rnn', 'speech_commands_dscnn',
                 'speech_commands_tcn')


def get_config(arg=None):
  args = common.parse_arg(arg, flags=('quick', 'full'),
                          options={'train': TRAIN_CONFIGS},
                          defaults={'train': 'digits_cnn'})
  variant = 'full' if args['full'] else 'quick'
  source = importlib.import_module(
      f'experiments.configs.train.{args["train"]}').get_config(variant)
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = source.data
  c.attack = source.attack
  c.attack.attacks = ('square', 'pgd')
  c.attack.options = ml_collections.ConfigDict({'square': {'queries': 200}})
  c.target = ml_collections.ConfigDict()
  c.target.tflite = ''            # the flatbuffer's path (required)
  c.target.surrogate = ''         # '' (none), a run workdir, Keras file or
  #                                 SavedModel directory
  c.target.surrogate_model = ''   # zoo model of a Keras/SavedModel surrogate
  c.target.surrogate_kwargs = ml_collections.ConfigDict()
  return c
