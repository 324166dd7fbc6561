"""Pure-JAX training augmentations, chosen by name from the config.

`get_augment(name, **kwargs)` returns `fn(key, x) -> x` for a whole batch;
it is traceable, so the trainer calls it inside its jitted step:

    augment = get_augment(config.data.augment)
    x = augment(jax.random.fold_in(key, step), x)

Names (join several with '+', applied left to right, e.g.
'time_shift+background_noise'):

* 'none': identity.
* 'flip': random horizontal flip of `[B, H, W, C]` images (p = 0.5).
* 'crop_flip': zero-pad `pad` (4) pixels, random `H x W` crop, then flip; the
  standard CIFAR-10 recipe.
* 'noise': additive Gaussian noise with std `std` (input units), clipped to
  `clip=(lo, hi)` when given.
* 'time_shift': shift `[B, samples]` audio by up to `max_shift` samples (1,600
  = 100 ms) either way, zero-filled (the KWS recipe).
* 'background_noise': mix Speech Commands `_background_noise_` into
  `[B, 16000]` waveforms (see `speech_commands.make_background_noise`); needs
  the local noise file (`data_dir` or $TINYROBUST_DATA_DIR).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from tinyrobust import registry
from tinyrobust.data import speech_commands

AugmentFn = Callable[[jax.Array, jax.Array], jax.Array]


def identity(key: jax.Array, x: jax.Array) -> jax.Array:
  del key
  return x


def random_flip(key: jax.Array, x: jax.Array) -> jax.Array:
  """Flips each `[H, W, C]` image left-right with probability 0.5."""
  flip = jax.random.bernoulli(key, 0.5, (x.shape[0],))
  return jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)


def random_crop(key: jax.Array, x: jax.Array, *, pad: int = 4) -> jax.Array:
  """Zero-pads `[B, H, W, C]` by `pad` and takes a random `H x W` crop each."""
  b, h, w, c = x.shape
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  off = jax.random.randint(key, (b, 2), 0, 2 * pad + 1)

  def crop(img, o):
    return jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c))

  return jax.vmap(crop)(xp, off)


def crop_flip(key: jax.Array, x: jax.Array, *, pad: int = 4) -> jax.Array:
  k1, k2 = jax.random.split(key)
  return random_flip(k2, random_crop(k1, x, pad=pad))


def gaussian_noise(key: jax.Array, x: jax.Array, *, std: float = 0.01,
                   clip: tuple[float, float] | None = None) -> jax.Array:
  y = x + std * jax.random.normal(key, x.shape, x.dtype)
  return y if clip is None else jnp.clip(y, clip[0], clip[1])


def time_shift(key: jax.Array, x: jax.Array, *,
               max_shift: int = 1600) -> jax.Array:
  """Shifts each `[samples]` row by a random integer in [-max_shift, max_shift]."""
  b, n = x.shape
  shift = jax.random.randint(key, (b,), -max_shift, max_shift + 1)
  src = jnp.arange(n)[None, :] - shift[:, None]
  valid = (src >= 0) & (src < n)
  return jnp.where(valid, jnp.take_along_axis(x, jnp.clip(src, 0, n - 1), 1),
                   0.0).astype(x.dtype)


def _background_noise_factory():
  return speech_commands.make_background_noise


def _background_noise(**kwargs) -> AugmentFn:
  return _background_noise_factory()(**kwargs)


def _bind(fn, **kwargs) -> AugmentFn:
  return lambda key, x: fn(key, x, **kwargs)


AUGMENTS = registry.Registry('augmentation')
AUGMENTS.register('none', obj=lambda: identity)
AUGMENTS.register('flip', obj=lambda: random_flip)
AUGMENTS.register('crop_flip', obj=lambda pad=4: _bind(crop_flip, pad=pad))
AUGMENTS.register('noise', obj=lambda std=0.01, clip=None: _bind(
    gaussian_noise, std=std, clip=clip))
AUGMENTS.register('time_shift', obj=lambda max_shift=1600: _bind(
    time_shift, max_shift=max_shift))
AUGMENTS.register('background_noise', obj=_background_noise,
                  options_of=_background_noise_factory)


def list_augments() -> list[str]:
  return AUGMENTS.names()


def _accepted(name: str) -> set[str]:
  options_of = AUGMENTS.meta(name).get('options_of')
  fn = options_of() if options_of else AUGMENTS.lookup(name)
  return set(registry.option_names(fn) or ())


def check_augment(name: str | None, **kwargs) -> list[str]:
  """Validates an augmentation name ('a+b' joins several) and its options;
  returns the names."""
  names = [n.strip() for n in (name or 'none').split('+')]
  bad = [n for n in names if n not in AUGMENTS]
  if bad:
    raise ValueError(f'Unknown augmentation(s) {bad}. Valid: '
                     f'{", ".join(list_augments())} (join with "+").')
  unused = set(kwargs) - set().union(*(_accepted(n) for n in names))
  if unused:
    raise ValueError(f'Option(s) {sorted(unused)} not accepted by '
                     f'augmentation {name!r}.')
  return names


def get_augment(name: str | None, **kwargs) -> AugmentFn:
  """Returns the batch augmentation `fn(key, x) -> x` called `name`.

  Args:
    name: one of `list_augments()`, several joined with '+', or None/'' for
      'none'.
    **kwargs: options of the named augmentation(s) (e.g. `pad`, `std`,
      `max_shift`, `prob`, `max_volume`, `data_dir`); with several names each
      factory receives the kwargs it accepts.

  Raises:
    ValueError: unknown name or option.
  """
  names = check_augment(name, **kwargs)
  fns = [AUGMENTS.lookup(n)(**{k: v for k, v in kwargs.items()
                               if k in _accepted(n)})
         for n in names]

  def augment(key: jax.Array, x: jax.Array) -> jax.Array:
    for i, fn in enumerate(fns):
      x = fn(jax.random.fold_in(key, i), x)
    return x

  return fns[0] if len(fns) == 1 else augment
