"""Turns a kernel's core into an `Attack`: eps handling, info, checks, jit.

Every factory writes only `run(variables, x, y, key, eps_b) -> x_adv` (eps
already broadcast to `[B, 1, ..., 1]`); `build_attack` adds what all kernels
share:

* eps == 0 returns x exactly (even when x lies outside the clip range);
* an invalid eps (negative, NaN, inf) or label (outside `[0, K)`) that
  reaches the traced kernel makes that example's x_adv all-NaN (concrete
  calls raise a ValueError first);
* with `return_info`, per-example diagnostics ('success', 'margin',
  'prediction', 'linf', 'l2', 'valid', plus any the core adds);
* with concrete inputs, `checks.check_inputs` (finite x, eps >= 0, labels in
  range for the model's class count) and `checks.check_in_clip` (the
  examples attacked at eps > 0 lie inside the clip range), then a cached
  `jax.jit` of the whole
  kernel, or, when the kernel's step loop resolves to 'host'
  (`loops.host_mode`), the kernel run from Python: its core drives the steps
  with `loops.run_loop` and its other pieces (start, bookkeeping, the final
  checks and info here) are jitted functions built once per kernel;
  under an outer trace (jit/vmap) only the shape checks run and 'host'
  falls back to 'fori'.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from tinyrobust.attacks import checks
from tinyrobust.attacks import loops
from tinyrobust.attacks import losses
from tinyrobust.attacks import norms
from tinyrobust.attacks import registry
from tinyrobust.attacks import threat as threat_lib

ApplyFn = Callable[[Any, jax.Array], jax.Array]
Run = Callable[..., Any]


def check_apply_fn(apply_fn: Any) -> None:
  if not callable(apply_fn):
    raise ValueError(f'apply_fn must be callable, got {apply_fn!r}.')


def jsonable(value: Any) -> Any:
  """Options as JSON types: tuples and arrays -> lists, NumPy scalars ->
  Python numbers (recursively)."""
  if isinstance(value, Mapping):
    return {str(k): jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [jsonable(v) for v in value]
  if isinstance(value, (np.ndarray, jax.Array)):
    return np.asarray(value).tolist()
  if isinstance(value, np.generic):
    return value.item()
  return value


def finish(x: jax.Array, x_adv: jax.Array, eps_b: jax.Array,
           valid: jax.Array) -> jax.Array:
  """Exact identity where eps == 0 (even when x lies outside `clip`); all-NaN
  examples where `valid` is False, so a bad eps or label that reached a
  traced kernel shows up as NaN instead of as a perfect defence."""
  out = jnp.where(eps_b > 0, x_adv, x)
  return jnp.where(valid.reshape(eps_b.shape), out, jnp.nan)


def valid_examples(apply_fn: ApplyFn, variables, x: jax.Array, y: jax.Array,
                   eps_b: jax.Array) -> jax.Array:
  """`[B]` bool: eps finite and >= 0 and label in `[0, K)` (K, the model's
  class count, read from the logits' static shape)."""
  spec = lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a))
  k = jax.eval_shape(apply_fn, jax.tree.map(spec, variables),
                     spec(x)).shape[-1]
  e = eps_b.reshape(-1)
  return jnp.isfinite(e) & (e >= 0) & (y >= 0) & (y < k)


def attack_info(apply_fn: ApplyFn, variables, x: jax.Array,
                x_adv: jax.Array, y: jax.Array, *,
                targeted: bool = False) -> dict[str, jax.Array]:
  """Per-example `[B]` diagnostics at `x_adv` (see `make_pgd`)."""
  # The barrier keeps XLA:CPU from fusing this forward pass into the last
  # gradient step, which measured ~1.4x slower than running it after.
  logits = apply_fn(variables, jax.lax.optimization_barrier(x_adv))
  pred = jnp.argmax(logits, axis=-1).astype(y.dtype)
  d = x_adv - x
  return {
      'success': pred == y if targeted else pred != y,
      'margin': losses.label_margin(logits, y),
      'prediction': pred,
      'linf': norms.per_example_norm(d, 'linf'),
      'l2': norms.per_example_norm(d, 'l2'),
  }


def class_counter(apply_fn: ApplyFn) -> Callable[[Any, Any], int]:
  """`num_classes(variables, x)` from the logits' shape, cached per
  (variables structure, example shape)."""
  cache: dict[Any, int] = {}

  def num_classes(variables, x) -> int:
    leaves, treedef = jax.tree.flatten(variables)
    sig = (treedef, tuple((jnp.shape(v), jnp.result_type(v)) for v in leaves),
           jnp.shape(x)[1:], jnp.result_type(x))
    if sig not in cache:
      out = jax.eval_shape(apply_fn, variables,
                           jax.ShapeDtypeStruct(jnp.shape(x),
                                                jnp.result_type(x)))
      if len(out.shape) != 2 or out.shape[0] != jnp.shape(x)[0]:
        raise ValueError(
            f'apply_fn must return logits of shape [B, K] = '
            f'[{jnp.shape(x)[0]}, K] for x of shape {jnp.shape(x)}, got '
            f'shape {tuple(out.shape)}.')
      cache[sig] = int(out.shape[-1])
    return cache[sig]

  return num_classes


def build_attack(name: str, config: Mapping[str, Any], apply_fn: ApplyFn,
                 run: Run, *, threat: threat_lib.Threat | None = None,
                 targeted: bool = False,
                 return_info: bool = False,
                 extra_info: bool = False,
                 loop: str | int | None = None) -> registry.Attack:
  """The `Attack` record around `run(variables, x, y, key, eps_b)`.

  Args:
    name: the record's name.
    config: the factory's options (made JSON-able here).
    apply_fn: the model, for the info's forward pass and the class count.
    run: the kernel core; returns `x_adv`, or `(x_adv, extra)` with a dict of
      `[B]` arrays when `extra_info`. When its step loop may run in 'host'
      mode it must be made of jitted pieces and `loops.run_loop`.
    threat: its clip bounds and eps scale are checked against the example
      shape at every call (also under tracing).
    targeted: success means prediction == y (else != y).
    return_info: the kernel returns `(x_adv, info)`.
    extra_info: see `run`.
    loop: the core's step-loop mode (`loops.LOOPS`); when it resolves to
      'host' on concrete inputs the kernel is run from Python, else jitted.
  """

  def post(variables, x, y, eps_b, x_adv, extra):
    valid = valid_examples(apply_fn, variables, x, y, eps_b)
    x_adv = finish(x, x_adv, eps_b, valid)
    if not return_info:
      return x_adv
    info = attack_info(apply_fn, variables, x, x_adv, y, targeted=targeted)
    info.update(extra)
    info['success'] = info['success'] & valid
    info['valid'] = valid
    return x_adv, info

  post_jit = jax.jit(post)

  def kernel(variables, x, y, key, eps):
    eps_b = norms.broadcast_eps(eps, x)
    out = run(variables, x, y, key, eps_b)
    x_adv, extra = out if extra_info else (out, {})
    return post_jit(variables, x, y, eps_b, x_adv, extra)

  jitted = jax.jit(kernel)
  num_classes = class_counter(apply_fn)

  def attack(variables, x, y, key, eps):
    """`x_adv = attack(variables, x [B, ...], y [B], key, eps [] or [B])`."""
    checks.check_shapes(x, y, eps)
    if isinstance(eps, (list, tuple)):  # a per-example list: an array
      eps = np.asarray(eps, np.float32)
    if threat is not None:
      threat.check_example_shape(tuple(jnp.shape(x)[1:]))
    if checks.is_traced(x, y, eps):
      return kernel(variables, x, y, key, eps)
    checks.check_inputs(x, y, eps, num_classes=num_classes(variables, x))
    if threat is not None:
      checks.check_in_clip(x, threat.lo, threat.hi, eps=eps)
    if loops.host_mode(loop, variables, key):
      return kernel(variables, jnp.asarray(x), jnp.asarray(y), key,
                    jnp.asarray(eps))
    return jitted(variables, x, y, key, eps)

  return registry.Attack(name=name, config=jsonable(config), kernel=attack)
