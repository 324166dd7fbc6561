"""Shared config defaults: every experiment config starts from `base_config`."""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """Returns the config schema with defaults that individual files override."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = ml_collections.ConfigDict()
  c.data.name = ''
  c.data.options = ml_collections.ConfigDict()
  c.data.augment = 'none'
  c.model = ml_collections.ConfigDict()
  c.model.name = ''
  c.model.num_classes = ml_collections.config_dict.placeholder(int)
  c.model.kwargs = ml_collections.ConfigDict()
  c.train = ml_collections.ConfigDict()
  c.train.epochs = 10
  c.train.batch_size = 64
  c.train.eval_batch_size = 512
  c.train.optimizer = 'adam'
  c.train.learning_rate = 1e-3
  c.train.schedule = 'cosine'
  c.train.warmup_epochs = 0
  c.train.weight_decay = 0.0
  c.train.momentum = 0.9
  c.train.label_smoothing = 0.0
  c.train.grad_clip_norm = 0.0
  c.train.progress_bar = True
  return c


def auritus_data(c: ml_collections.ConfigDict, *, channels: str,
                 normalisation: str | None = None) -> None:
  """Sets `c.data` to AURITUS windows of the study (550/50 at 100 Hz).

  Participants are held out (the honest protocol; the study's random-window
  split is `--config.data.options.split_by=window`).

  Args:
    c: config to fill in place.
    channels: 'raw6' (acc g, gyro deg/s), 'magnitudes' or 'features'.
    normalisation: optional loader normalisation ('standardize' or 'none').
  """
  c.data.name = 'auritus'
  c.data.options.channels = channels
  c.data.options.split_by = 'participant'
  c.data.options.window = 550
  c.data.options.stride = 50
  c.data.options.seed = 0
  if normalisation is not None:
    c.data.options.normalisation = normalisation
