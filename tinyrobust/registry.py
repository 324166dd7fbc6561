"""One registry helper for every name -> factory table in tinyrobust.

Models, datasets, streams, augmentations, search spaces, designers,
executors, optimizers and attacks each keep one `Registry`:

    MODELS = Registry('model')

    @MODELS.register('mlp')
    def mlp(num_classes, hidden=(64,)): ...

    MODELS.get('mlp', 10, hidden=(32,))     # builds; checks the options
    MODELS.names()                          # ['mlp', ...]

Errors are uniform and raised before any work: an unknown name gives
"Unknown model 'x'. Valid: a, b, c.", an unknown keyword option gives
"Unknown option(s) ['y'] for model 'mlp'. Valid options: hidden." (checked
against the factory's signature; factories with `**kwargs` accept anything).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable, Mapping


def check_options(kind: str, name: str, fn: Callable, options: Iterable[str],
                  *, positional: Iterable[str] = ()) -> None:
  """Raises ValueError if `fn` accepts none of some keyword `options`.

  Args:
    kind: what `name` names ('model', 'dataset', ...), for the message.
    name: the registered name, for the message.
    fn: the factory whose signature decides.
    options: the keyword names a caller wants to pass.
    positional: parameter names the registry itself fills (e.g.
      `num_classes`), left out of the "Valid options" list.
  """
  params = inspect.signature(fn).parameters
  if any(p.kind == p.VAR_KEYWORD for p in params.values()):
    return
  hidden = set(positional)
  bad = sorted(set(options) - set(params))
  if bad:
    valid = [p for p in params if p not in hidden
             and params[p].kind != inspect.Parameter.VAR_POSITIONAL]
    raise ValueError(f'Unknown option(s) {bad} for {kind} {name!r}. Valid '
                     f'options: {", ".join(valid) or "(none)"}.')


def option_names(fn: Callable) -> tuple[str, ...] | None:
  """Keyword names `fn` accepts, or None when it takes `**kwargs`."""
  params = inspect.signature(fn).parameters
  if any(p.kind == p.VAR_KEYWORD for p in params.values()):
    return None
  return tuple(n for n, p in params.items()
               if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))


class Registry:
  """Names -> factories of one kind, with uniform lookup errors.

  Attributes:
    kind: what the entries are ('model', 'attack', ...), used in messages.
    positional: parameter names that `get` passes positionally (left out of
      the valid-options list in errors), e.g. `('num_classes',)`.
  """

  def __init__(self, kind: str, *, positional: Iterable[str] = ()):
    self.kind = kind
    self.positional = tuple(positional)
    self._entries: dict[str, Any] = {}
    self._meta: dict[str, dict[str, Any]] = {}

  def register(self, *names: str, obj: Any = None, **meta):
    """Registers `obj` under `names`; without `obj`, a decorator.

    Keyword `meta` is stored per name (read with `meta(name)`), e.g. the
    splits a dataset provides. Registering a name twice is an error.
    """
    if not names or not all(isinstance(n, str) and n for n in names):
      raise ValueError(f'{self.kind} names must be non-empty strings, got '
                       f'{names!r}.')

    def wrap(o):
      for n in names:
        if n in self._entries:
          raise ValueError(f'{self.kind.capitalize()} {n!r} registered '
                           'twice.')
        self._entries[n] = o
        self._meta[n] = dict(meta)
      return o

    return wrap if obj is None else wrap(obj)

  def unregister(self, name: str) -> None:
    """Removes `name` (tests that register temporary entries use it)."""
    self.lookup(name)
    del self._entries[name]
    del self._meta[name]

  def names(self) -> list[str]:
    """Registered names, sorted."""
    return sorted(self._entries)

  def __iter__(self):
    return iter(self.names())

  def __len__(self) -> int:
    return len(self._entries)

  def __contains__(self, name: object) -> bool:
    return isinstance(name, str) and name in self._entries

  def lookup(self, name: str) -> Any:
    """The registered entry itself; ValueError naming the valid ones."""
    if not isinstance(name, str) or name not in self._entries:
      raise ValueError(f'Unknown {self.kind} {name!r}. Valid: '
                       f'{", ".join(self.names()) or "(none registered)"}.')
    return self._entries[name]

  def meta(self, name: str) -> Mapping[str, Any]:
    self.lookup(name)
    return self._meta[name]

  def check(self, name: str, options: Mapping[str, Any] | Iterable[str] = ()
            ) -> Callable:
    """Looks `name` up and checks keyword `options` against its signature."""
    fn = self.lookup(name)
    check_options(self.kind, name, fn, options, positional=self.positional)
    return fn

  def options(self, name: str) -> tuple[str, ...] | None:
    """Keyword options the factory `name` accepts (None: any)."""
    entry = self.lookup(name)
    if not callable(entry):  # a record wrapping its factory (data sources)
      entry = entry.fn
    names = option_names(entry)
    if names is None:
      return None
    return tuple(n for n in names if n not in self.positional)

  def get(self, name: str, *args, **options) -> Any:
    """Builds `name`: `factory(*args, **options)`, options checked first."""
    return self.check(name, options)(*args, **options)
