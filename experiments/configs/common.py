"""Shared config pieces: the base schema, the variant parser, data sections.

Every experiment config starts from `base_config()` and states only what
differs. Variants are one comma-separated argument after the file name,
parsed by `parse_arg`:

    --config=experiments/configs/train/auritus_tcn.py:quick
    --config=experiments/configs/search/auritus.py:quick,noadv,model=protonn

Flags are bare words (`quick`, `full`, `noadv`, ...), options are
`key=value` with a fixed set of values; anything else is an error that lists
what the file accepts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

import ml_collections

from tinyrobust import adversarial
from tinyrobust.attacks import config as attack_config_lib


class Args(dict):
  """Parsed variant argument: flags map to True, options to their value.

  Attribute access reads with a default: `args.quick` is False when the flag
  was not given, `args.model` is the option's default when not given.
  """

  def __getattr__(self, name: str) -> Any:
    try:
      return self[name]
    except KeyError as err:
      raise AttributeError(name) from err


def parse_arg(arg: str | None, *, flags: Iterable[str] = ('quick', 'full'),
              options: Mapping[str, Iterable[str]] | None = None,
              defaults: Mapping[str, str] | None = None,
              exclusive: Iterable[Iterable[str]] = (('quick', 'full'),)
              ) -> Args:
  """Parses `'quick,noadv,model=protonn'` into `Args`.

  Args:
    arg: the text after `:` in `--config=<file>:<arg>` (None or '' = none).
    flags: bare words the file accepts.
    options: `key -> allowed values` for `key=value` tokens.
    defaults: `key -> value` used when an option is not given.
    exclusive: groups of flags of which at most one may be given.

  Raises:
    ValueError: an unknown flag, option or value, a repeated option, or two
      exclusive flags; the message lists what is valid.
  """
  flags, options = tuple(flags), {k: tuple(v) for k, v in
                                  (options or {}).items()}
  valid = ', '.join(list(flags) + [f'{k}={"|".join(v)}'
                                   for k, v in options.items()])
  out = Args({f: False for f in flags})
  out.update(defaults or {})
  seen = set()
  for token in (t.strip() for t in (arg or '').split(',')):
    if not token:
      continue
    key, eq, value = token.partition('=')
    if eq and key in options and value in options[key] and key not in seen:
      out[key] = value
      seen.add(key)
    elif not eq and key in flags:
      out[key] = True
    else:
      raise ValueError(f'Unknown or repeated config variant {token!r}. Valid '
                       f'(comma-separated): {valid or "(none)"}.')
  for group in exclusive:
    on = [f for f in group if out.get(f)]
    if len(on) > 1:
      raise ValueError(f'Config variants {on} exclude each other.')
  return out


def base_config() -> ml_collections.ConfigDict:
  """The config schema with defaults; each field is documented here once."""
  c = ml_collections.ConfigDict()
  c.seed = 0                     # root PRNG seed of init, data order, attacks
  c.data = ml_collections.ConfigDict()
  c.data.name = ''               # tinyrobust.data.list_datasets()
  c.data.options = ml_collections.ConfigDict()  # the loader's keyword options
  c.data.augment = 'none'        # tinyrobust.data.augment names, '+'-joined
  c.model = ml_collections.ConfigDict()
  c.model.name = ''              # tinyrobust.models.list_models()
  # Set from the dataset by the trainer when left unset.
  c.model.num_classes = ml_collections.config_dict.placeholder(int)
  c.model.kwargs = ml_collections.ConfigDict()  # the model's keyword options
  c.train = ml_collections.ConfigDict()
  c.train.epochs = 10
  c.train.batch_size = 64        # per step, over all devices
  c.train.eval_batch_size = 512  # clean evaluation (may change on resume)
  c.train.optimizer = 'adam'     # adam | adamw | sgd (nesterov)
  c.train.learning_rate = 1e-3   # peak learning rate
  c.train.schedule = 'cosine'    # cosine (with warmup) | constant
  c.train.warmup_epochs = 0
  c.train.weight_decay = 0.0
  c.train.momentum = 0.9         # sgd only
  c.train.label_smoothing = 0.0
  c.train.grad_clip_norm = 0.0   # 0 = no clipping
  c.train.progress_bar = True    # may change on resume
  # Adversarial training (PGD-AT, TRADES, FGSM-RS), off by default; fields in
  # tinyrobust.adversarial.default_config. An off section is dropped from the
  # pinned config.json (runs pinned before it existed resume).
  c.train.adversarial = adversarial.default_config()
  # int8-aware training: the last k epochs through the fake-quantised int8
  # forward (tinyrobust.qat); 0 = off. Workdirs pinned before the field
  # existed resume (config_io.ADDED_FIELDS).
  c.train.qat_epochs = 0
  # Robustness evaluation (--mode=attack, studies, the search's adversarial
  # term); fields documented in tinyrobust.attacks.config.default_attack_config.
  c.attack = attack_config_lib.default_attack_config()
  # Threat model (tinyrobust.evaluation.threat_space, .deployed), checked by
  # threat_space.check_threat before any compute:
  #   space: 'input' (the model's input, the study's setting) or 'signal'
  #     (the raw sensor signal through the differentiable front-end and
  #     normalisation: waveform -> MFCC, raw IMU -> window features).
  #   eps_units: the unit the eps grid is stated in, carried into every
  #     result ('' = the space's default: 'pixel/255', 'train-std', 'mfcc',
  #     'waveform', 'physical', or 'g' / 'deg/s' for AURITUS signals).
  #   clip: valid range, (lo, hi) scalars or per-channel lists; None = the
  #     dataset's (pixels [0, 1], waveform [-1, 1], AURITUS +-4 g on acc
  #     and +-500 deg/s on gyro channels).
  #   precisions: of 'float32', 'int8-litert', 'int8-fakequant'.
  #   gyro_per_g: AURITUS signal eps on gyro per eps on acc (deg/s per g);
  #     None = the ratio of their train-split standard deviations.
  c.threat = ml_collections.ConfigDict({
      'space': 'input', 'eps_units': '',
      'clip': ml_collections.config_dict.placeholder(tuple),
      'precisions': ('float32',),
      'gyro_per_g': ml_collections.config_dict.placeholder(float)})
  return c


def auritus_data(c: ml_collections.ConfigDict, *, channels: str,
                 normalisation: str | None = None,
                 eps_grid: tuple[float, ...] | None = None) -> None:
  """Sets `c.data` to AURITUS windows of the study (550/50 at 100 Hz).

  Participants are held out (the honest protocol; the study's random-window
  split is `--config.data.options.split_by=window`).

  Args:
    c: config to fill in place.
    channels: 'raw6' (acc g, gyro deg/s), 'magnitudes' or 'features'.
    normalisation: optional loader normalisation ('standardise' or 'none').
    eps_grid: the attack's eps grid (input units) when given.
  """
  c.data.name = 'auritus'
  c.data.options.channels = channels
  c.data.options.split_by = 'participant'
  c.data.options.window = 550
  c.data.options.stride = 50
  c.data.options.seed = 0
  if normalisation is not None:
    c.data.options.normalisation = normalisation
  if eps_grid is not None:
    c.attack.eps_grid = eps_grid


# AURITUS eps grids in input units: standardised raw windows (train std) and
# standardised window features (train std).
AURITUS_RAW_EPS = (0.0, 0.05, 0.1, 0.2, 0.4)
AURITUS_FEATURE_EPS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8)


def auritus_training(arg: str | None, *, channels: str, learning_rate: float,
                     quick_epochs: int = 30,
                     quick_batch_size: int | None = None
                     ) -> ml_collections.ConfigDict:
  """A training config on AURITUS with the zoo's shared schedule.

  Raw windows ('raw6') are standardised per channel with train statistics;
  features are standardised by the loader. Default/`full`: 100 epochs on the
  study's 550/50 windows; `quick`: `quick_epochs` on 550/150 windows (and
  `quick_batch_size`). The caller sets the model.
  """
  args = parse_arg(arg, flags=('quick', 'full'))
  c = base_config()
  raw = channels == 'raw6'
  auritus_data(c, channels=channels,
               normalisation='standardise' if raw else None,
               eps_grid=AURITUS_RAW_EPS if raw else AURITUS_FEATURE_EPS)
  c.train.epochs = 100
  c.train.learning_rate = learning_rate
  if args.quick:
    c.data.options.stride = 150
    c.train.epochs = quick_epochs
    if quick_batch_size:
      c.train.batch_size = quick_batch_size
  return c


def speech_commands_data(c: ml_collections.ConfigDict, *,
                         features: str = 'mfcc') -> None:
  """Sets `c.data` to Speech Commands features (speakers held out) and the
  attack's eps grid in feature units."""
  c.data.name = 'speech_commands'
  c.data.options.features = features
  c.data.options.seed = 0
  c.attack.eps_grid = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)


def cifar10_large(arg: str | None, model: str, *, image_size: int
                  ) -> ml_collections.ConfigDict:
  """A keras.applications model on CIFAR-10 (see `train/cifar10_<model>.py`).

  Default/`full`: 100 epochs of SGD + cosine from scratch at the ImageNet
  resolution `image_size` (CIFAR-10 images are resized inside the model;
  use a GPU). `finetune`: the study's transfer learning, 10 epochs of SGD
  (learning rate 0.01) at `image_size` from keras.applications ImageNet
  weights given as `--config.model.kwargs.keras_weights=<*_notop.h5>`
  (loaded by the model's `data_init` hook; required: without it the run
  stops with ml_collections' RequiredValueError). `quick`: 3 epochs of Adam
  at the native 32x32 (this CPU). Inputs stay [N, 32, 32, 3] in [0, 1]
  either way, so eps is in pixel units (x/255).
  """
  args = parse_arg(arg, flags=('quick', 'full', 'finetune'),
                   exclusive=(('quick', 'full', 'finetune'),))
  c = base_config()
  c.data.name = 'cifar10'
  c.data.options.seed = 0
  c.data.augment = 'crop_flip'
  c.model.name = model
  c.model.kwargs.image_size = image_size
  c.model.kwargs.keras_weights = ml_collections.config_dict.placeholder(str)
  c.train.epochs = 100
  c.train.optimizer = 'sgd'
  c.train.learning_rate = 0.05
  c.train.weight_decay = 5e-4
  c.train.warmup_epochs = 2
  if args.finetune:
    c.model.kwargs.keras_weights = (
        ml_collections.config_dict.required_placeholder(str))
    c.train.epochs = 10
    c.train.learning_rate = 0.01
    c.train.warmup_epochs = 1
  if args.quick:
    del c.model.kwargs.image_size
    if model != 'vgg19':  # running BN statistics keep up with 420 steps
      c.model.kwargs.bn_momentum = 0.9
    c.train.epochs = 3
    c.train.optimizer = 'adam'
    c.train.learning_rate = 1e-3
    c.train.weight_decay = 0.0
    c.train.warmup_epochs = 0
  return c


def speech_commands_large(arg: str | None, model: str, *,
                          learning_rate: float, features: str = 'mfcc'
                          ) -> ml_collections.ConfigDict:
  """A Hello Edge baseline (or the attention RNN, `features='logmel'`) on
  Speech Commands (speakers held out, as `train/speech_commands_dscnn.py`):
  `quick` 10 epochs on this CPU, `full`/default 100 epochs of Adam with
  cosine decay; gradients clipped at norm 1 (the recurrent models)."""
  args = parse_arg(arg, flags=('quick', 'full'))
  c = base_config()
  speech_commands_data(c, features=features)
  c.model.name = model
  c.train.epochs = 10 if args.quick else 100
  c.train.learning_rate = learning_rate
  c.train.grad_clip_norm = 1.0
  return c


def auritus_large(arg: str | None, model: str, *, learning_rate: float
                  ) -> ml_collections.ConfigDict:
  """A large HAR model on raw AURITUS windows (participants held out;
  standardised per channel, eps in train-std units): `quick` 10 epochs of
  batch 32 on 550/150 windows, `full`/default 100 epochs on the study's
  550/50 windows (use a GPU)."""
  c = auritus_training(arg, channels='raw6', learning_rate=learning_rate,
                       quick_epochs=10, quick_batch_size=32)
  c.model.name = model
  c.train.grad_clip_norm = 1.0
  return c


@dataclasses.dataclass(frozen=True)
class Large:
  """One row of a large-model family's table: parameters and learning rate."""
  params: int
  learning_rate: float


def large_family(arg, models, builder, file: str):
  """`get_config` of a family file picked with `model=` (big_vision's
  `variant=` style): `builder(variant, model, learning_rate=...)`."""
  variants = ('quick', 'full')
  args = parse_arg(arg, flags=variants, options={'model': tuple(models)})
  if 'model' not in args:
    first = next(iter(models))
    raise ValueError(f'{file} needs a model= variant, got {arg!r}; valid: '
                     f'model={"|".join(models)} (e.g. '
                     f'`{file}:quick,model={first}`).')
  variant = ','.join(v for v in variants if args[v])
  return builder(variant, args.model,
                 learning_rate=models[args.model].learning_rate)

