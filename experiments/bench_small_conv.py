r"""XLA's convolution vs the patch form on small feature maps (CPU).

The evidence behind `tinyrobust.models.small_conv`: for 3x3 SAME
convolutions over maps of 1x1 to 16x16 pixels, the forward pass and the
input gradient (what an attack step costs) through `lax.conv_general_dilated`
and through `small_conv.patch_conv`, interleaved (`--rounds` rounds, best
kept, the first call with compile apart), and the same for whole zoo models
at 32x32 (VGG19, ResNet50: every convolution through `nn.Conv`, the patch
form switched off with `MAX_PATCH_PIXELS = 0`), and depthwise 3x3
convolutions: the grouped convolution vs `depthwise._shifted` (the forward
pass inside `depthwise.shifted_forward()`, in the 'patch' column). Prints
run ms per arm, the ratio XLA / patch (above 1: the patch form is faster)
and the largest difference between the two outputs.

Command:

  python -m experiments.bench_small_conv [--batch=16] [--rounds=3] \
      [--models=vgg19,resnet50]
"""

from __future__ import annotations

import time

from absl import app
from absl import flags
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from tinyrobust.models import depthwise
from tinyrobust.models import imagenet
from tinyrobust.models import small_conv

_BATCH = flags.DEFINE_integer('batch', 16, 'Images per call.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Interleaved rounds (best kept).')
_MODELS = flags.DEFINE_list('models', ['vgg19', 'resnet50'],
                            'Zoo models timed whole at 32x32.')
LAYERS = ((1, 512, 512), (2, 512, 512), (2, 256, 256), (4, 512, 512),
          (4, 256, 256), (8, 256, 256), (16, 128, 128))


def _best(fns: dict, args, rounds: int) -> tuple[dict, dict, dict]:
  """Per arm: (first call s, best run s, output) over interleaved rounds."""
  first, best, out = {}, {}, {}
  for _ in range(rounds + 1):
    for name, fn in fns.items():
      t = time.perf_counter()
      out[name] = jax.block_until_ready(fn(*args))
      s = time.perf_counter() - t
      if name not in first:
        first[name] = s
      else:
        best[name] = min(best.get(name, np.inf), s)
  return first, best, out


def _diff(a, b) -> float:
  return max(float(jnp.max(jnp.abs(x - y)))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _row(what, first, best, out):
  print(f'| {what} | {best["xla"] * 1e3:.1f} | {best["patch"] * 1e3:.1f} | '
        f'{best["xla"] / best["patch"]:.2f}x | {first["xla"]:.2f} / '
        f'{first["patch"]:.2f} | {_diff(out["xla"], out["patch"]):.2g} |',
        flush=True)


def bench_layers(b: int, rounds: int) -> None:
  for hw, cin, cout in LAYERS:
    k1, k2 = jax.random.split(jax.random.key(hw * cin))
    x = jax.random.normal(k1, (b, hw, hw, cin))
    w = jax.random.normal(k2, (3, 3, cin, cout)) / np.sqrt(9 * cin)
    conv = {'xla': lambda x, w: lax.conv_general_dilated(
        x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')),
            'patch': lambda x, w: small_conv.patch_conv(x, w, (1, 1), 'SAME')}
    for kind in ('forward', 'input gradient'):
      if kind == 'forward':
        fns = {k: jax.jit(f) for k, f in conv.items()}
      else:
        fns = {k: jax.jit(jax.grad(lambda x, w, f=f: jnp.sum(f(x, w) ** 2)))
               for k, f in conv.items()}
      _row(f'{hw}x{hw} {cin}->{cout}, {kind}', *_best(fns, (x, w), rounds))


def bench_depthwise(rounds: int) -> None:
  """Depthwise 3x3 (DS-CNN, MCUNet, EfficientNet shapes): the grouped
  convolution vs `depthwise`'s shifted multiply-adds (`shifted_forward`)."""
  for shape in ((72, 25, 5, 64), (72, 25, 5, 172), (16, 8, 8, 192)):
    x = jax.random.normal(jax.random.key(0), shape)
    k = jax.random.normal(jax.random.key(1), (3, 3, 1, shape[-1]))
    fns = {'xla': jax.jit(lambda x, k: depthwise._conv(x, k, 1)),
           'patch': jax.jit(lambda x, k: depthwise._shifted(x, k, 1))}
    _row(f'depthwise {shape}, forward (patch = shifted)',
         *_best(fns, (x, k), rounds))


def bench_models(names, b: int, rounds: int) -> None:
  x = jax.random.uniform(jax.random.key(0), (b, 32, 32, 3))
  for name in names:
    model = getattr(imagenet, name)(10)
    variables = model.init(jax.random.key(1), x)
    for kind in ('forward', 'input gradient'):
      def make(limit, kind=kind):
        def f(v, x):
          saved = small_conv.MAX_PATCH_PIXELS
          small_conv.MAX_PATCH_PIXELS = limit
          try:
            if kind == 'forward':
              return model.apply(v, x)
            return jax.grad(lambda z: jnp.sum(model.apply(v, z)))(x)
          finally:
            small_conv.MAX_PATCH_PIXELS = saved
        return jax.jit(f)
      fns = {'xla': make(0), 'patch': make(small_conv.MAX_PATCH_PIXELS)}
      _row(f'{name} 32x32, {kind}', *_best(fns, (variables, x), rounds))


def main(argv):
  del argv
  if _ROUNDS.value < 1 or _BATCH.value < 1:
    raise app.UsageError('--rounds and --batch must be >= 1.')
  print(f'backend {jax.default_backend()}; batch {_BATCH.value}; best of '
        f'{_ROUNDS.value} interleaved rounds after a first call (trace + '
        f'compile + run, in the first-call column); MAX_PATCH_PIXELS '
        f'{small_conv.MAX_PATCH_PIXELS}')
  print('| 3x3 SAME convolution | XLA ms | patch ms | XLA / patch | first '
        'call XLA / patch s | max abs diff |')
  print('|---|---|---|---|---|---|')
  bench_layers(_BATCH.value, _ROUNDS.value)
  bench_depthwise(_ROUNDS.value)
  bench_models(_MODELS.value, _BATCH.value, _ROUNDS.value)


if __name__ == '__main__':
  app.run(main)
