"""Speech Commands v0.02, 12 classes (MLPerf Tiny KWS): TFDS or offline copy.

Labels: `down go left no off on right stop up yes _silence_ _unknown_` (0-11,
the TFDS `speech_commands` order). Examples are 1 s at 16 kHz.

* `features='waveform'` (default): `[N, 16000]` float32 in [-1, 1]
  (int16 / 32768), `input_range=(-1, 1)`: eps is in full-scale units.
* `features='mfcc'` / `'logmel'`: `[N, 49, 10]` / `[N, 49, 40]` computed with the
  JAX front-end of `tinyrobust.data.audio`; `input_range=None`.

Sources:

* TFDS (`source='tfds'`, or 'auto' without a local copy): the official
  train/validation/test lists (speaker-disjoint by the dataset's hashing).
  Clips shorter than 1 s are zero-padded at the end, longer ones cut. TFDS does
  not expose speaker ids, so `meta['speakers']` is None there.
* Local (`speech_commands_v002_testset.npz`): only the 4,890 clips of the
  official **test** set exist offline, so they are split here into
  train/val/test **grouped by speaker**: speakers are shuffled with `seed` and
  assigned in that order until each split holds about its fraction of the
  clips, so no speaker is in two splits. `_silence_` clips have no speaker
  (''); they are shuffled with `seed` and cut by the same fractions (their
  noise recordings are unrelated to any speaker). `drop_duplicates=True`
  removes the 121 clips flagged as exact copies of an earlier clip.
  `meta['speakers']` lists each split's speakers.

`make_background_noise` builds the Speech Commands background-noise mixing
augmentation (pure JAX) from `speech_commands_background_noise.npz`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from tinyrobust import fileio
from tinyrobust import tf_setup
from tinyrobust.data import audio
from tinyrobust.data import base
from tinyrobust.data import signal
from tinyrobust.data import sources
from tinyrobust.data import streaming

FILENAME = 'speech_commands_v002_testset.npz'
NOISE_FILENAME = 'speech_commands_background_noise.npz'
TFDS_NAME = 'speech_commands'
LABEL_NAMES = ('down', 'go', 'left', 'no', 'off', 'on', 'right', 'stop', 'up',
               'yes', '_silence_', '_unknown_')
NUM_SAMPLES = 16000
_TFDS_SPLITS = {'train': 'train', 'val': 'validation', 'test': 'test'}
_SPLITS = ('train', 'val', 'test')


@functools.lru_cache(maxsize=1)
def _npz(path: str) -> dict[str, np.ndarray]:
  return fileio.load_npz(path)


def speaker_split(speaker: np.ndarray, fractions: tuple[float, float, float],
                  seed: int) -> list[np.ndarray]:
  """Assigns clips to splits so that no speaker is in two of them.

  Args:
    speaker: `[N]` speaker ids; '' marks clips without a speaker (silence).
    fractions: target share of clips per split (sums to 1).
    seed: shuffles the speaker order (and the speaker-less clips).

  Returns:
    One sorted index array per split.
  """
  rng = np.random.default_rng([seed, 0])
  names, counts = np.unique(speaker[speaker != ''], return_counts=True)
  order = rng.permutation(len(names))
  bounds = np.cumsum(fractions) * counts.sum()
  # A speaker goes to the split holding the middle of its run of clips.
  mid = np.cumsum(counts[order]) - counts[order] / 2.0
  part_of = dict(zip(names[order], np.searchsorted(bounds, mid, 'right')))
  part_of = {k: min(int(v), len(fractions) - 1) for k, v in part_of.items()}
  parts = [[] for _ in fractions]
  for i, s in enumerate(speaker):
    if s != '':
      parts[part_of[s]].append(i)
  lone = np.random.default_rng([seed, 1]).permutation(
      np.flatnonzero(speaker == ''))
  cuts = np.round(np.cumsum(fractions) * len(lone)).astype(int)
  for k, chunk in enumerate(np.split(lone, cuts[:-1])):
    parts[k].extend(chunk.tolist())
  return [np.sort(np.asarray(p, np.int64)) for p in parts]


def _check(seed, val_fraction, test_fraction, features):
  seed, val_fraction, test_fraction = base.check_split_fractions(
      seed, val_fraction, test_fraction)
  if features not in audio.FEATURES:
    raise ValueError(f'Unknown features {features!r}. Valid: '
                     f'{", ".join(audio.FEATURES)}.')
  return seed, val_fraction, test_fraction


@functools.lru_cache(maxsize=8)
def _local(path, split, seed, val_fraction, test_fraction, drop_duplicates,
           features):
  d = _npz(path)
  fr = (1.0 - val_fraction - test_fraction, val_fraction, test_fraction)
  parts = dict(zip(_SPLITS, speaker_split(d['speaker'], fr, seed)))
  idx = parts[split]
  n_dup = int((d['duplicate_of'][idx] >= 0).sum())
  if drop_duplicates:
    idx = idx[d['duplicate_of'][idx] < 0]
  x = d['audio'][idx].astype(np.float32) / 32768.0
  x = audio.compute_features(x, features)
  x.setflags(write=False)  # cached: shared by every caller
  spk = sorted(set(d['speaker'][idx].tolist()) - {''})
  meta = dict(
      source=path, speakers=spk, indices=idx.tolist(),
      duplicates_in_split=n_dup, duplicates_dropped=bool(drop_duplicates),
      protocol=(f'offline copy of the official v0.02 TEST set only, split by '
                f'speaker {fr[0]:.2f}/{val_fraction}/{test_fraction} '
                f'(train/val/test), seed {seed}; _silence_ clips (no speaker) '
                'shuffled and cut by the same fractions'),
      note=('speakers are disjoint from the official train/validation '
            'speakers; accuracies are not comparable with published ones'))
  return x, d['label'][idx].astype(np.int32), meta


def _tfds_ds(builder, split):
  tf = tf_setup.import_tf()

  def fix(a, y):
    a = a[:NUM_SAMPLES]
    a = tf.pad(a, [[0, NUM_SAMPLES - tf.shape(a)[0]]])
    a = tf.ensure_shape(tf.cast(a, tf.float32) / 32768.0, [NUM_SAMPLES])
    return a, y

  ds = builder.as_dataset(split=_TFDS_SPLITS[split], as_supervised=True,
                          shuffle_files=False)
  return ds.map(fix)


def _meta_common(features):
  m = dict(features=features, sample_rate_hz=16000, signal_range=(-1.0, 1.0),
           layout={'waveform': '[N, 16000]', 'mfcc': '[N, 49, 10]',
                   'logmel': '[N, 49, 40]'}[features])
  if features != 'waveform':
    m['frontend'] = dict(vars(audio.KWS))
  return m


@base.register_source('speech_commands', splits=_SPLITS)
def speech_commands(split: str, source: str = 'auto',
                    data_dir: str | None = None,
                    tfds_data_dir: str | None = None, download: bool = True,
                    seed: int = 0, val_fraction: float = 0.1,
                    test_fraction: float = 0.2, drop_duplicates: bool = True,
                    features: str = 'waveform') -> base.Dataset:
  """Speech Commands v0.02, 12 classes; waveforms or MFCC/log-mel features.

  Args:
    split: 'train', 'val' or 'test'.
    source: 'auto', 'local' or 'tfds' (see `tinyrobust.data.sources`).
    data_dir: folder with the local `.npz` (else $TINYROBUST_DATA_DIR).
    tfds_data_dir: TFDS data folder.
    download: allow TFDS to download.
    seed: speaker shuffle of the local split.
    val_fraction: local copy: share of clips in 'val'.
    test_fraction: local copy: share of clips in 'test'.
    drop_duplicates: local copy: drop clips flagged `duplicate_of >= 0`.
    features: 'waveform', 'mfcc' or 'logmel'.

  Returns:
    The split; `meta['speakers']` lists its speakers (None for TFDS). The
    TFDS training split (~85k clips, ~5 GB as float32) is better read with
    `tinyrobust.data.stream('speech_commands', 'train', batch_size)`.
  """
  seed, val_fraction, test_fraction = _check(seed, val_fraction,
                                             test_fraction, features)
  path = sources.resolve('speech_commands', source, FILENAME, data_dir,
                         TFDS_NAME)
  meta = _meta_common(features)
  if path is None:
    builder = sources.tfds_builder('speech_commands', TFDS_NAME,
                                   tfds_data_dir=tfds_data_dir,
                                   download=download, filename=FILENAME,
                                   data_dir=data_dir)
    x, y = streaming.tf_to_numpy(_tfds_ds(builder, split))
    x = audio.compute_features(x, features)
    meta.update(source=f'tfds:{TFDS_NAME}', speakers=None,
                protocol=f'TFDS speech_commands split {_TFDS_SPLITS[split]!r}'
                ' (official lists, speaker-disjoint by hashing)',
                duplicates_dropped=False,
                note='TFDS does not expose speaker ids; clips padded/cut to '
                '16000 samples; drop_duplicates applies to the local copy only')
  else:
    x, y, local_meta = _local(path, split, seed, val_fraction, test_fraction,
                              bool(drop_duplicates), features)
    meta.update(local_meta)
  return base.Dataset(
      x=x, y=y, label_names=LABEL_NAMES,
      input_range=(-1.0, 1.0) if features == 'waveform' else None, meta=meta)


@signal.register_space('speech_commands')
def _space(options) -> signal.SpaceSpec:
  """The waveform; MFCC / log-mel models are attacked through the JAX
  front-end of `data.audio`."""
  features = options.get('features', 'waveform')
  if features == 'waveform':
    return signal.SpaceSpec(('waveform',), ('waveform',), None,
                            signal.identity_problem)
  return signal.SpaceSpec(({'mfcc': 'mfcc', 'logmel': 'log-mel'}.get(
      features, features),), ('waveform',), None, _signal_problem)


def _signal_problem(ds, apply_fn, threat, split, options) -> signal.Problem:
  """Waveforms `[N, 16000]` in [-1, 1] through the JAX MFCC/log-mel."""
  features = options.get('features', 'waveform')
  raw = base.load('speech_commands', split,
                  **{**options, 'features': 'waveform'})
  frontend = audio.feature_fn(features)
  signal.check_same('speech_commands', raw.y, ds.y, frontend, raw.x, ds.x)
  clip = threat.get('clip')
  return signal.Problem(
      'signal', signal.with_frontend(apply_fn, frontend), raw.x, raw.y,
      signal.as_clip(clip if clip is not None else raw.input_range), None,
      'waveform (full scale = 1)', frontend,
      {'frontend': f'tinyrobust.data.audio.{features} (MLPerf Tiny KWS)'})


@streaming.register_stream('speech_commands')
def _stream(split, batch_size, shuffle_seed, drop_remainder, source='auto',
            data_dir=None, tfds_data_dir=None, download=True, seed=0,
            val_fraction=0.1, test_fraction=0.2, drop_duplicates=True,
            features='waveform'):
  """TFDS clips read lazily (features per batch); None for the local copy."""
  _check(seed, val_fraction, test_fraction, features)
  if sources.resolve('speech_commands', source, FILENAME, data_dir,
                     TFDS_NAME) is not None:
    return None
  del drop_duplicates
  builder = sources.tfds_builder('speech_commands', TFDS_NAME,
                                 tfds_data_dir=tfds_data_dir,
                                 download=download, filename=FILENAME,
                                 data_dir=data_dir)
  it = streaming.tf_batches(_tfds_ds(builder, split), batch_size,
                            shuffle_seed, drop_remainder)
  fn = jax.jit(audio.feature_fn(features))
  return ((np.asarray(fn(x)), y) for x, y in it)


@functools.lru_cache(maxsize=2)
def load_background_noise(data_dir: str | None = None
                         ) -> dict[str, np.ndarray]:
  """The six `_background_noise_` recordings, float32 in [-1, 1] at 16 kHz.

  Raises:
    DataNotFoundError: the noise file is in neither `data_dir` nor
      $TINYROBUST_DATA_DIR.
  """
  path = base.find_local_file(NOISE_FILENAME, data_dir)
  if path is None:
    raise sources.DataNotFoundError(sources.not_found_message(
        'speech_commands background noise', NOISE_FILENAME, None, data_dir))
  d = fileio.load_npz(path)
  return {str(n): d[str(n)].astype(np.float32) / 32768.0 for n in d['names']}


def make_background_noise(data_dir: str | None = None, prob: float = 0.8,
                          max_volume: float = 0.1,
                          num_samples: int = NUM_SAMPLES):
  """Background-noise mixing augmentation, `fn(key, x[B, samples]) -> x`.

  The Speech Commands training recipe (TensorFlow `input_data.py`): with
  probability `prob` per clip, a random 1 s excerpt of a random noise
  recording, scaled by a volume drawn uniformly from [0, max_volume], is added
  to the waveform; the sum is clipped to [-1, 1]. Pure JAX (jit/vmap safe); the
  noise bank (~6.4 M samples) is a constant of the returned function.

  Args:
    data_dir: folder with `speech_commands_background_noise.npz`.
    prob: probability that a clip gets noise.
    max_volume: largest noise gain (full-scale units).
    num_samples: clip length.
  """
  if not 0.0 <= prob <= 1.0:
    raise ValueError(f'prob must be in [0, 1], got {prob!r}.')
  if max_volume < 0:
    raise ValueError(f'max_volume must be >= 0, got {max_volume!r}.')
  return noise_mixer(list(load_background_noise(data_dir).values()),
                     prob=prob, max_volume=max_volume,
                     num_samples=num_samples)


def noise_mixer(recs: list[np.ndarray], *, prob: float, max_volume: float,
                num_samples: int = NUM_SAMPLES):
  """`make_background_noise` over given 1-D recordings (float, [-1, 1])."""
  lengths = np.array([len(r) for r in recs])
  if lengths.min() < num_samples:
    raise ValueError(f'num_samples={num_samples} is longer than a noise '
                     f'recording ({lengths.min()} samples).')
  bank = jnp.asarray(np.concatenate(recs))
  starts = jnp.asarray(np.concatenate([[0], np.cumsum(lengths)[:-1]]))
  spans = jnp.asarray(lengths - num_samples + 1)

  def augment(key: jax.Array, x: jax.Array) -> jax.Array:
    b = x.shape[0]
    kr, ko, kv, kp = jax.random.split(key, 4)
    rec = jax.random.randint(kr, (b,), 0, len(recs))
    off = jnp.floor(jax.random.uniform(ko, (b,)) * spans[rec]).astype(
        jnp.int32)
    seg = jax.vmap(lambda s: jax.lax.dynamic_slice(bank, (s,), (num_samples,))
                  )(starts[rec] + off)
    vol = jax.random.uniform(kv, (b, 1), maxval=max_volume)
    on = jax.random.bernoulli(kp, prob, (b, 1))
    return jnp.clip(x + jnp.where(on, vol, 0.0) * seg, -1.0, 1.0).astype(
        x.dtype)

  return augment
