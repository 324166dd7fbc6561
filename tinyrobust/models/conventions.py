"""Input conventions the zoo models declare for profilers and attack code.

Every zoo module mixes in `InputSpec`, which gives it:
  * `input_kind` (class attribute): 'features' `[B, D]`, 'sequence'
    `[B, T, C]`, 'spectrogram' `[B, T, F]` or `[B, T, F, 1]`, 'image'
    `[B, H, W, C]`;
  * `example_input_shape()`: the per-example shape (no batch axis) the
    model is built for, e.g. `(32, 32, 3)`, so hardware counters can build a
    dummy batch `jnp.zeros((1,) + model.example_input_shape())`.
The optional `input_shape` field of each module overrides the default
(e.g. a TCN on 550-sample IMU windows: `input_shape=(550, 6)`).
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Protocol, Sequence

INPUT_KINDS = ('features', 'sequence', 'spectrogram', 'image')


HOOKS = ('data_init', 'project_params', 'train_kwargs')


class TrainHooks(Protocol):
  """Optional methods a zoo module may define; the trainer calls each one
  that exists (`hook(model, name)`), with `progress = step / total_steps`
  in [0, 1]:

  * `data_init(variables, x_train, key, y_train=None) -> variables`: once,
    after `model.init` (ProtoNN/Bonsai k-means prototypes).
  * `project_params(params, progress) -> params`: after every optimizer
    update, inside the jitted step (iterative hard thresholding).
  * `train_kwargs(progress) -> dict`: extra keyword arguments of
    `model.apply` in training steps (Bonsai's sigma annealing).
  """

  def data_init(self, variables: Any, x_train: Any, key: Any,
                y_train: Any = None) -> Any: ...

  def project_params(self, params: Any, progress: Any) -> Any: ...

  def train_kwargs(self, progress: Any) -> dict[str, Any]: ...


def hook(model: Any, name: str) -> Callable | None:
  """The model's `TrainHooks` method `name`, or None when it has none."""
  if name not in HOOKS:
    raise ValueError(f'Unknown trainer hook {name!r}. Valid: '
                     f'{", ".join(HOOKS)}.')
  fn = getattr(model, name, None)
  return fn if callable(fn) else None


class InputSpec:
  """Mixin: `input_kind` and `example_input_shape()` (see module doc)."""
  input_kind: ClassVar[str] = ''
  default_input_shape: ClassVar[tuple[int, ...]] = ()

  def example_input_shape(self) -> tuple[int, ...]:
    shape = getattr(self, 'input_shape', None)
    return tuple(int(s) for s in shape) if shape else self.default_input_shape


def as_shape(name: str, shape: Sequence[int] | None,
             rank: int | Sequence[int]) -> tuple[int, ...] | None:
  """Validates an optional per-example shape of the given rank(s)."""
  if shape is None:
    return None
  ranks = (rank,) if isinstance(rank, int) else tuple(rank)
  shape = tuple(int(s) for s in shape)
  if len(shape) not in ranks or any(s < 1 for s in shape):
    raise ValueError(f'{name} must be {" or ".join(map(str, ranks))} '
                     f'positive ints (no batch axis), got {shape!r}.')
  return shape


def check_built_shape(name: str, input_shape: tuple[int, ...] | None,
                      got: tuple[int, ...], x_shape: tuple[int, ...]) -> None:
  """Raises if a module built for `input_shape` receives a different shape.

  Args:
    name: model name for the message.
    input_shape: the (possibly sliced) shape the module was built for, or None
      when it accepts any shape.
    got: the matching slice of the input's shape.
    x_shape: the whole input shape, for the message.
  """
  if input_shape is not None and got != input_shape:
    raise ValueError(f'{name} built for input_shape={input_shape}, got x of '
                     f'shape {x_shape}.')


def check_image_input(name: str, input_shape: tuple[int, ...] | None,
                      x_shape: tuple[int, ...]) -> None:
  """Raises unless `x_shape` is an image batch `[B, H, W, C]` of the shape
  the module was built for (`input_shape`, or any when None)."""
  if len(x_shape) != 4:
    raise ValueError(f'{name} expects images [B, H, W, C], got {x_shape}.')
  check_built_shape(name, input_shape, tuple(x_shape[1:]), tuple(x_shape))
