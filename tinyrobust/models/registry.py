"""The model registry: names -> Flax linen module constructors.

Each model family module decorates its constructor with `@register(name)`;
`tinyrobust.models.get_model(name, num_classes, **kwargs)` builds one.
Constructors take `num_classes` plus keyword options (size variants) and
return an `nn.Module` whose `__call__(x, train=False)` maps a batch to logits.
"""

from __future__ import annotations

import inspect
from typing import Callable

import flax.linen as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(*names: str):
  """Registers a constructor `fn(num_classes, **kwargs) -> nn.Module`."""

  def wrap(fn):
    for name in names:
      if name in _MODELS:
        raise ValueError(f'Model {name!r} registered twice.')
      _MODELS[name] = fn
    return fn

  return wrap


def list_models() -> list[str]:
  """Names accepted by `get_model`."""
  return sorted(_MODELS)


def get_model(name: str, num_classes: int, **kwargs) -> nn.Module:
  """Builds the registered model `name` with `num_classes` outputs.

  Raises:
    ValueError: unknown name, bad `num_classes` or unknown keyword option.
  """
  if name not in _MODELS:
    raise ValueError(
        f'Unknown model {name!r}. Valid names: {", ".join(list_models())}.')
  if not isinstance(num_classes, int) or num_classes < 2:
    raise ValueError(f'num_classes must be an int >= 2, got {num_classes!r}.')
  fn = _MODELS[name]
  params = inspect.signature(fn).parameters
  if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
    bad = sorted(set(kwargs) - set(params) - {'num_classes'})
    if bad:
      valid = [p for p in params if p != 'num_classes']
      raise ValueError(f'Unknown option(s) {bad} for model {name!r}. '
                       f'Valid options: {", ".join(valid) or "(none)"}.')
  return fn(num_classes=num_classes, **kwargs)
