"""Per-example attack losses on logits and the logit margin.

Every loss maps `logits [B, K]` and integer labels `y [B]` to `[B]`, computed in
float32. An untargeted attack ascends the loss of the true label; a targeted
attack descends the loss of the target label (`y` then holds targets).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def _f32(logits: jax.Array) -> jax.Array:
  return jnp.asarray(logits, jnp.promote_types(logits.dtype, jnp.float32))


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Softmax cross-entropy of integer labels: `-log softmax(logits)[y]`, [B]."""
  logp = jax.nn.log_softmax(_f32(logits), axis=-1)
  return -jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0]


def softmax_mse(logits: jax.Array, y: jax.Array) -> jax.Array:
  """The study's loss: mean over classes of `(softmax(logits) - onehot(y))^2`."""
  p = jax.nn.softmax(_f32(logits), axis=-1)
  onehot = jax.nn.one_hot(y, logits.shape[-1], dtype=p.dtype)
  return jnp.mean(jnp.square(p - onehot), axis=-1)


KERAS_EPSILON = 1e-7  # keras.backend.epsilon()


def keras_clipped_cross_entropy(logits: jax.Array, y: jax.Array
                                ) -> jax.Array:
  """Keras' categorical cross-entropy on softmax outputs, [B].

  `-log clip(p_y, 1e-7, 1 - 1e-7)` with `p = softmax(logits)` renormalised
  to sum 1, as `keras.losses.CategoricalCrossentropy()` (from_logits=False)
  computes it on a model's softmax output tensor in eager mode (Keras 2 and
  3). It is the study's loss where its Keras models were compiled with
  `loss='categorical_crossentropy'` on a softmax output and its attacks
  took gradients of that loss; use it to reproduce such numbers.

  Gradient masking: where `p_y > 1 - 1e-7` (in float32, from a logit
  margin of about 16) the clip is active and the gradient is exactly
  zero, so FGSM/PGD cannot move very confident examples and report them
  robust. To measure robustness use 'ce' (on logits, never saturates),
  'margin' or 'dlr'. The clip passes the gradient on `[1e-7, 1 - 1e-7]`
  and zero outside, as `tf.clip_by_value`.
  """
  p = jax.nn.softmax(_f32(logits), axis=-1)
  p = p / jnp.sum(p, axis=-1, keepdims=True)
  p_y = jnp.take_along_axis(p, y[:, None], axis=-1)[:, 0]
  lo = jnp.asarray(KERAS_EPSILON, p.dtype)
  hi = jnp.asarray(1.0 - KERAS_EPSILON, p.dtype)
  p_y = jnp.where(p_y < lo, lo, jnp.where(p_y > hi, hi, p_y))
  return -jnp.log(p_y)


def label_margin(logits: jax.Array, y: jax.Array) -> jax.Array:
  """`z_y - max_{j != y} z_j`, [B]: positive iff the model predicts `y`."""
  z = _f32(logits)
  z_y = jnp.take_along_axis(z, y[:, None], axis=-1)[:, 0]
  is_y = jax.nn.one_hot(y, z.shape[-1], dtype=jnp.bool_)
  z_other = jnp.max(jnp.where(is_y, -jnp.inf, z), axis=-1)
  return z_y - z_other


def margin_loss(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Carlini-Wagner style margin loss `max_{j != y} z_j - z_y`, [B]."""
  return -label_margin(logits, y)


def _check_classes(logits: jax.Array, need: int, name: str) -> None:
  if logits.shape[-1] < need:
    raise ValueError(f'The {name} loss needs at least {need} classes, got '
                     f'logits with {logits.shape[-1]}.')


def dlr_loss(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Difference of logits ratio (Croce and Hein 2020), [B], needs K >= 3:

  `-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12)`, with `z_pi1 >=
  z_pi2 >= ...` the sorted logits. Invariant to shifting and scaling the
  logits, so it does not vanish on saturated softmax outputs.
  """
  _check_classes(logits, 3, 'DLR')
  z = _f32(logits)
  top = jax.lax.top_k(z, 3)[0]
  return -label_margin(z, y) / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_targeted_loss(logits: jax.Array, y: jax.Array,
                      target: jax.Array) -> jax.Array:
  """Targeted DLR, [B], needs K >= 4:
  `-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`."""
  _check_classes(logits, 4, 'targeted DLR')
  z = _f32(logits)
  top = jax.lax.top_k(z, 4)[0]
  z_y = jnp.take_along_axis(z, y[:, None], axis=-1)[:, 0]
  z_t = jnp.take_along_axis(z, target[:, None], axis=-1)[:, 0]
  return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


LOSSES: dict[str, LossFn] = {
    'ce': cross_entropy,
    'mse': softmax_mse,
    'margin': margin_loss,
    'dlr': dlr_loss,
    'keras_clipped_ce': keras_clipped_cross_entropy,
}


def get_loss(name: str) -> LossFn:
  """Returns the per-example loss called `name` (one of `LOSSES`)."""
  if not isinstance(name, str) or name not in LOSSES:
    raise ValueError(f'Unknown loss {name!r}. Valid: {", ".join(LOSSES)}.')
  return LOSSES[name]
