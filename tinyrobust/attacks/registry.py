"""Attacks as plug-ins: a typed, callable record and a name -> factory registry.

Every factory (`make_fgsm`, `make_pgd`, `make_apgd`, `make_square`,
`make_autoattack`, or one you add) takes `apply_fn` and keyword options and
returns an `Attack`: a frozen record of the attack's registered name, the
JSON-able options it was built with and its pure kernel. Calling the record
calls the kernel:

    attack = get_attack('pgd', apply_fn, steps=10, clip=(0.0, 1.0))
    x_adv = attack(variables, x, y, key, eps)
    attack.name, dict(attack.config)     # 'pgd', {'norm': 'linf', ...}

Adding an attack is one registration; the evaluator then finds it by name:

    def make_noise(apply_fn, *, norm='linf'):
      def kernel(variables, x, y, key, eps):
        ...
      return Attack('noise', {'norm': norm}, kernel)

    register_attack('noise', make_noise)
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Callable, Mapping

from tinyrobust import registry as registry_lib

Kernel = Callable[..., Any]
Factory = Callable[..., 'Attack']

ATTACKS = registry_lib.Registry('attack', positional=('apply_fn',))


@dataclasses.dataclass(frozen=True, eq=False)
class Attack:
  """A built attack: `attack(variables, x, y, key, eps) -> x_adv`.

  Records compare and hash by identity (so they can be passed to `jax.jit`
  or used as dict keys like the plain functions they replace).

  Attributes:
    name: the registered name ('fgsm', 'pgd', 'apgd-ce', ...); metric keys
      are built from it.
    config: the options the factory was built with, JSON-able (tuples and
      arrays as lists), read-only.
    kernel: the callable doing the work, with the same signature.
    stages: for a cascade (AutoAttack), its ordered stage `Attack` records,
      for a host-side scheduler that runs each stage only on the points
      still robust; empty for a single attack.
  """
  name: str
  config: Mapping[str, Any]
  kernel: Kernel
  stages: tuple['Attack', ...] = dataclasses.field(default=(), compare=False)

  def __post_init__(self):
    if not isinstance(self.name, str) or not self.name:
      raise ValueError(f'Attack name must be a non-empty string, got '
                       f'{self.name!r}.')
    if not callable(self.kernel):
      raise ValueError(f'Attack kernel must be callable, got '
                       f'{self.kernel!r}.')
    object.__setattr__(self, 'config',
                       types.MappingProxyType(dict(self.config)))
    object.__setattr__(self, 'stages', tuple(self.stages))
    if not all(isinstance(s, Attack) for s in self.stages):
      raise ValueError(f'Attack stages must be Attack records, got '
                       f'{self.stages!r}.')

  def __call__(self, variables, x, y, key, eps):
    """Delegates to `kernel(variables, x, y, key, eps)`."""
    return self.kernel(variables, x, y, key, eps)

  @property
  def kind(self) -> str:
    """The name (read-only; the attribute older code read)."""
    return self.name

  @property
  def __name__(self) -> str:  # for jax.jit / logging of a callable
    return self.name


def register_attack(name: str, factory: Factory) -> Factory:
  """Registers `factory(apply_fn, **options) -> Attack` under `name`.

  Registering a name twice is a ValueError. Returns the factory, so it can
  be used as `register_attack('x', make_x)` at module level.
  """
  if not callable(factory):
    raise ValueError(f'Attack factory for {name!r} must be callable, got '
                     f'{factory!r}.')
  return ATTACKS.register(name, obj=factory)


def unregister_attack(name: str) -> None:
  """Removes `name` (for tests that register temporary attacks)."""
  ATTACKS.unregister(name)


def get_attack(name: str, apply_fn: Callable, **options) -> Attack:
  """Builds the registered attack `name` for `apply_fn` with `options`.

  Raises:
    ValueError: unknown name (the message lists the valid ones), an option
      the factory does not take (listing the ones it does), or a bad value.
  """
  out = ATTACKS.get(name, apply_fn, **options)
  return as_attack(name, out)


def list_attacks() -> list[str]:
  """The registered attack names, sorted."""
  return ATTACKS.names()


def attack_options(name: str) -> tuple[str, ...] | None:
  """Keyword options the factory of `name` accepts (None: any, `**kwargs`).

  The evaluator passes shared config options (norm, loss, clip, eps_scale)
  only to factories that list them here.
  """
  return ATTACKS.options(name)


def as_attack(name: str, obj: Any) -> Attack:
  """`obj` as an `Attack` record: records pass through; a plain kernel is
  wrapped under `name` (its `config` attribute, if any, is kept)."""
  if isinstance(obj, Attack):
    return obj
  if not callable(obj):
    raise ValueError(f'Attack {name!r} must be an Attack record or a '
                     f'callable kernel, got {obj!r}.')
  config = getattr(obj, 'config', None)
  return Attack(name=name,
                config=dict(config) if isinstance(config, Mapping) else {},
                kernel=obj)
