"""The model registry: names -> Flax linen module constructors.

Each model family module decorates its constructor with `@register(name)`;
`tinyrobust.models.get_model(name, num_classes, **kwargs)` builds one.
Constructors take `num_classes` plus keyword options (size variants) and
return an `nn.Module` whose `__call__(x, train=False)` maps a batch to logits.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import numpy as np

from tinyrobust import registry

MODELS = registry.Registry('model', positional=('num_classes',))


def register(*names: str):
  """Registers a constructor `fn(num_classes, **kwargs) -> nn.Module`."""
  return MODELS.register(*names)


def list_models() -> list[str]:
  """Names accepted by `get_model`."""
  return MODELS.names()


def check_model(name: str, kwargs: Mapping[str, Any] = ()) -> None:
  """Raises ValueError for an unknown model name or keyword option."""
  MODELS.check(name, kwargs)


def get_model(name: str, num_classes: int, **kwargs) -> nn.Module:
  """Builds the registered model `name` with `num_classes` outputs.

  Raises:
    ValueError: unknown name, bad `num_classes` or unknown keyword option.
  """
  fn = MODELS.check(name, kwargs)
  if isinstance(num_classes, bool) or not isinstance(
      num_classes, (int, np.integer)) or num_classes < 2:
    raise ValueError(f'num_classes must be an int >= 2, got {num_classes!r}.')
  return fn(num_classes=int(num_classes), **kwargs)
