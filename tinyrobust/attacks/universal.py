"""Universal adversarial perturbations: one `delta` for every input.

Method: stochastic projected gradient ascent on the batch loss ("SGD-UAP",
the stochastic-gradient universal perturbation of Shafahi et al.,
"Universal Adversarial Training", AAAI 2020), not Moosavi-Dezfooli et al.'s
DeepFool-based iterative algorithm (CVPR 2017). Starting from `delta = 0`,
each step takes a minibatch of the training split and moves `delta` along
the steepest-ascent direction of the mean loss (optionally Shafahi's
clamped cross-entropy `min(CE, clamp)`, so examples already fooled stop
dominating):

    g     = grad_delta mean_{i in batch} L(f(clip(x_i + delta)), y_i)
    delta = Proj_eps(delta + alpha * direction(g))

with `direction` = sign (L-inf) or `g / ||g||_2` (L2), in the `eps_scale`d
space of `tinyrobust.attacks.threat`. The perturbation is applied to any
input as `clip(x + delta)`. With several source models (an ensemble) the
loss is the mean of the members' losses.

`fit_universal` returns a `UniversalPerturbation` (the array and its
protocol); `save_universal`/`load_universal` keep both in one `.npz` (the
protocol as JSON), so it can be replayed (added to a waveform, written as
an audio or IMU signal) and audited later.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tinyrobust.attacks import build
from tinyrobust.attacks import checks
from tinyrobust.attacks import losses
from tinyrobust.attacks import norms
from tinyrobust.attacks import threat as threat_lib

ApplyFn = Callable[[Any, jax.Array], jax.Array]
METHOD = ('sgd-uap: stochastic projected gradient ascent on the batch loss '
          '(Shafahi et al., AAAI 2020)')


class UniversalPerturbation(NamedTuple):
  """A fitted universal perturbation (unpacks as `delta, protocol`).

  Attributes:
    delta: `[*example_shape]` float array in input units, inside the ball.
    protocol: JSON-able dict: method, eps, norm, eps_units, eps_scale, clip,
      loss, loss_clamp, epochs, steps, batch_size, step_size, seed,
      num_train, sources (names), example_shape, dtype, and the achieved
      'delta_linf' / 'delta_l2' (input units).
  """
  delta: np.ndarray
  protocol: dict[str, Any]

  def apply(self, x: Any) -> np.ndarray:
    """`clip(x + delta)` for `x [B, *example_shape]`."""
    return apply_universal(self.delta, x, self.protocol.get('clip'))


def apply_universal(delta: Any, x: Any, clip: Any = None) -> np.ndarray:
  """`clip(x + delta)`: the same `delta [*S]` added to every `x [B, *S]`."""
  x = np.asarray(x)
  delta = np.asarray(delta, x.dtype)
  if delta.shape != x.shape[1:]:
    raise ValueError(f'delta of shape {delta.shape} does not match one '
                     f'example of x {x.shape} (need {x.shape[1:]}).')
  out = x + delta
  lo, hi = threat_lib.check_clip(clip)
  return out if lo is None else np.clip(out, lo, hi).astype(x.dtype)


def _as_sources(apply_fn, variables, source_names):
  """[(name, apply_fn, variables)] from one model or a list/dict of pairs."""
  if callable(apply_fn):
    names = list(source_names or ['model'])
    if len(names) != 1:
      raise ValueError(f'One model needs one source name, got {names}.')
    return [(str(names[0]), apply_fn, variables)]
  if variables is not None:
    raise ValueError('Pass variables=None with an ensemble: the sources are '
                     'the (apply_fn, variables) pairs themselves.')
  items = (list(apply_fn.items()) if isinstance(apply_fn, Mapping) else
           [(f'source{i}', p) for i, p in enumerate(apply_fn or ())])
  if source_names is not None:
    if len(source_names) != len(items):
      raise ValueError(f'source_names has {len(source_names)} names for '
                       f'{len(items)} sources.')
    items = [(n, p) for n, (_, p) in zip(source_names, items)]
  out = []
  for name, pair in items:
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not callable(
        pair[0]):
      raise ValueError(f'Source {name!r} must be an (apply_fn, variables) '
                       f'pair, got {type(pair).__name__}.')
    out.append((str(name), pair[0], pair[1]))
  if not out:
    raise ValueError('apply_fn must be a callable or a non-empty list/dict of '
                     '(apply_fn, variables) pairs.')
  return out


def _check_number(name: str, v: Any, *, positive: bool) -> float:
  if isinstance(v, bool) or not isinstance(v, (int, float, np.integer,
                                               np.floating)) or \
      not math.isfinite(v) or (v <= 0 if positive else v < 0):
    rel = '> 0' if positive else '>= 0'
    raise ValueError(f'{name} must be a finite number {rel}, got {v!r}.')
  return float(v)


def _check_int(name: str, v: Any) -> int:
  if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
    raise ValueError(f'{name} must be an int >= 1, got {v!r}.')
  return int(v)


def _step_fn(sources, threat, loss_fn, loss_clamp):
  """jit(delta [1, *S], variables tuple, x [b, *S], y [b], alpha, eps)."""
  applies = tuple(a for _, a, _ in sources)

  def objective(delta, all_vars, xb, yb):
    xa = threat.clip(xb + delta)
    total = 0.0
    for apply_fn, v in zip(applies, all_vars):
      l = loss_fn(apply_fn(v, xa), yb)
      if loss_clamp is not None:
        l = jnp.minimum(l, loss_clamp)
      total = total + jnp.mean(l)
    return total / len(applies)

  def step(delta, all_vars, xb, yb, alpha, eps):
    g = jax.grad(objective)(delta, all_vars, xb, yb)
    eps_b = jnp.reshape(eps, (1,) * delta.ndim)
    return threat.project_delta(delta + alpha * threat.direction(g), eps_b)

  return jax.jit(step)


def fit_universal(apply_fn: ApplyFn | Sequence | Mapping, variables: Any,
                  x_train: Any, y_train: Any, *, eps: float,
                  norm: str = 'linf', clip: Any = None, eps_scale: Any = None,
                  eps_units: str = 'input', epochs: int = 5,
                  batch_size: int = 128, step_size: float | None = None,
                  loss: str = 'ce', loss_clamp: float | None = None,
                  seed: int = 0, source_names: Sequence[str] | None = None
                  ) -> UniversalPerturbation:
  """Fits one perturbation by stochastic projected gradient ascent (SGD-UAP).

  Args:
    apply_fn: `apply_fn(variables, x [B, *S]) -> logits [B, K]` in eval mode;
      or an ensemble: a list of `(apply_fn, variables)` pairs or a dict
      name -> pair (then `variables=None`); the loss is the members' mean.
    variables: the model's variables (None for an ensemble).
    x_train: `[N, *S]` float training inputs (the split delta is fit on).
    y_train: `[N]` int labels.
    eps: radius in input units (an L-inf bound or an L2 norm of the one
      delta; `universal_eps_from_snr_db` turns a dB budget into it).
    norm: 'linf' or 'l2'.
    clip: `(lo, hi)` valid input range applied after adding delta, or None.
    eps_scale: per-feature scales as in `tinyrobust.attacks.threat`.
    eps_units: label recorded in the protocol (e.g. 'input', 'g', 'dB').
    epochs: passes over a seeded permutation of the training split; each
      pass takes `N // batch_size` full minibatches (the remainder is left
      out of that pass so that one compiled shape serves every step).
    batch_size: minibatch size, capped at N.
    step_size: alpha in (scaled) input units; None = `eps / 10`.
    loss: a name from `tinyrobust.attacks.LOSSES` (per example, averaged).
    loss_clamp: Shafahi et al.'s clamp `min(loss, clamp)`, or None.
    seed: the minibatch order (delta starts at 0); deterministic for a seed.
    source_names: names for the protocol (default: the dict's keys,
      `source<i>` for a list, 'model' for one model).

  Returns:
    `UniversalPerturbation(delta [*S] in x's dtype, protocol)`.

  Raises:
    ValueError: a bad option or input (e.g. a `clip` range that does not
      contain `x_train`: `checks.check_in_clip`), before any compilation.
  """
  sources = _as_sources(apply_fn, variables, source_names)
  norms.check_norm(norm)
  loss_fn = losses.get_loss(loss)
  eps = _check_number('eps', eps, positive=False)
  epochs, batch_size = _check_int('epochs', epochs), _check_int(
      'batch_size', batch_size)
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or \
      seed < 0:
    raise ValueError(f'seed must be an int >= 0, got {seed!r}.')
  if step_size is not None:
    step_size = _check_number('step_size', step_size, positive=True)
  if loss_clamp is not None:
    loss_clamp = _check_number('loss_clamp', loss_clamp, positive=True)
  x, y = np.asarray(x_train), np.asarray(y_train)
  if len(x) == 0:
    raise ValueError('x_train is empty.')
  for name, fn, v in sources:
    k = build.class_counter(fn)(v, x[:1])
    try:
      checks.check_inputs(x, y, eps, num_classes=k)
    except ValueError as e:
      raise ValueError(f'Source {name!r}: {e}') from e
  threat = threat_lib.Threat.build(norm, clip, eps_scale)
  threat.check_example_shape(x.shape[1:])
  checks.check_in_clip(x, threat.lo, threat.hi, eps=eps)
  batch_size = min(batch_size, len(x))
  alpha = step_size if step_size is not None else eps / 10.0
  step = _step_fn(sources, threat, loss_fn, loss_clamp)
  all_vars = tuple(v for _, _, v in sources)
  delta = jnp.zeros((1,) + x.shape[1:], x.dtype)
  rng = np.random.default_rng(int(seed))
  n_steps = 0
  a, e = jnp.asarray(alpha, x.dtype), jnp.asarray(eps, x.dtype)
  for _ in range(epochs):
    perm = rng.permutation(len(x))
    for lo in range(0, len(x) - batch_size + 1, batch_size):
      idx = perm[lo:lo + batch_size]
      delta = step(delta, all_vars, x[idx], y[idx], a, e)
      n_steps += 1
  delta = np.asarray(delta[0])
  protocol = {
      'method': METHOD, 'eps': eps, 'norm': norm, 'eps_units': eps_units,
      'eps_scale': build.jsonable(eps_scale), 'clip': build.jsonable(clip),
      'loss': loss, 'loss_clamp': loss_clamp, 'epochs': epochs,
      'steps': n_steps, 'batch_size': batch_size, 'step_size': float(alpha),
      'seed': int(seed), 'num_train': int(len(x)),
      'sources': [n for n, _, _ in sources],
      'example_shape': list(x.shape[1:]), 'dtype': str(x.dtype),
      'delta_linf': float(np.max(np.abs(delta), initial=0.0)),
      'delta_l2': float(np.sqrt(np.sum(np.square(delta, dtype=np.float64)))),
  }
  return UniversalPerturbation(delta, protocol)


def save_universal(path: str, uap: UniversalPerturbation) -> str:
  """Writes `delta` and the protocol (JSON) to `path` (`.npz`); returns it."""
  delta, protocol = uap
  if not str(path).endswith('.npz'):
    raise ValueError(f'path must end in .npz, got {path!r}.')
  with open(path, 'wb') as f:
    np.savez(f, delta=np.asarray(delta),
             protocol=np.asarray(json.dumps(protocol, sort_keys=True)))
  return str(path)


def load_universal(path: str) -> UniversalPerturbation:
  """Reads what `save_universal` wrote (no pickles)."""
  with np.load(path, allow_pickle=False) as z:
    if 'delta' not in z or 'protocol' not in z:
      raise ValueError(f'{path} holds {sorted(z.files)}, not a universal '
                       'perturbation (delta, protocol).')
    return UniversalPerturbation(np.array(z['delta']),
                                 json.loads(str(z['protocol'])))
