"""int8-aware (quantisation-aware) training through the fake-quantised forward.

`config.train.qat_epochs = k` (absent or 0: off) trains the last k of
`train.epochs` epochs through `hardware.fakequant`, the simulated
full-integer int8 model that `hardware.export_tflite(quantize='int8')`
produces, so the int8 flatbuffer deployed on the board is the model that was
trained (and, with `train.adversarial`, the one that was defended):

* at the start of every int8-aware epoch the fake-quantised model is
  calibrated (`fakequant.calibrate`) for the current weights on
  `hardware.representative(train inputs)`, the int8 export's calibration
  set; the epoch's train steps then run `FakeQuant.apply`: int8 weights
  (per output channel) and activations, gradients through the
  straight-through estimator (rounding's gradient is the identity);
* those passes run the model as deployed: eval mode (batch-norm running
  statistics frozen at their value when the int8-aware epochs start, no
  dropout, no `train_kwargs` such as Bonsai's annealed sigma_I);
  `project_params` (ProtoNN/Bonsai's projected training) still applies;
* with `train.adversarial` on, the examples are crafted on the
  fake-quantised model (white-box through the STE) and the epoch's
  catastrophic-overfitting check attacks it;
* `best.ckpt` is chosen among the int8-aware epochs only (the best record
  restarts at the first one), so the run's trained model is int8-aware.

Resume: the calibration depends only on the weights restored from the last
checkpoint, so a killed run resumes bit-identically as plain training does.
Cost: one calibration and one recompilation of the train step per
int8-aware epoch.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from tinyrobust import adversarial
from tinyrobust import hardware
from tinyrobust.hardware import fakequant


def qat_epochs(config) -> int:
  """The checked `train.qat_epochs` (0 when absent).

  Raises:
    ValueError: not an int in [0, train.epochs].
  """
  k = config.train.get('qat_epochs', 0)
  epochs = config.train.get('epochs')
  ok = not isinstance(k, bool) and isinstance(k, (int, np.integer))
  if not ok or k < 0 or (isinstance(epochs, (int, np.integer)) and
                         k > epochs):
    raise ValueError(f'train.qat_epochs must be an int in [0, train.epochs='
                     f'{epochs!r}] (the last epochs trained through the '
                     f'fake-quantised int8 forward pass; 0: off), got {k!r}.')
  return int(k)


def check_config(config) -> None:
  """Validates `train.qat_epochs` before any data is loaded."""
  qat_epochs(config)


def first_epoch(config) -> int:
  """0-based index of the first int8-aware epoch (`train.epochs` when off)."""
  return int(config.train.epochs) - qat_epochs(config)


class QuantAwareModel:
  """A zoo model whose `apply` is its calibrated fake-quantised int8 forward.

  Drop-in for the trainer and `adversarial.build`: `apply(variables, x,
  train=..., mutable=..., rngs=..., **kwargs)` always runs the deployed
  (eval-mode) int8 simulation; with `mutable` it returns `(logits,
  {'batch_stats': unchanged})`. Other attributes (the trainer hooks) are
  the wrapped model's.

  Attributes:
    model: the Flax module.
    fake_quant: its `fakequant.FakeQuant`, calibrated for some variables.
  """

  def __init__(self, model, fake_quant: fakequant.FakeQuant):
    self.model = model
    self.fake_quant = fake_quant

  def __getattr__(self, name: str) -> Any:
    if name in ('model', 'fake_quant'):
      raise AttributeError(name)
    return getattr(self.model, name)

  def apply(self, variables, x, train: bool = False, mutable: Any = False,
            rngs: Any = None, **kwargs):
    """Fake-quantised logits `[B, K]` of `x` `[B, ...]` (module doc)."""
    del train, rngs, kwargs
    v = {k: variables[k] for k in ('params', 'batch_stats')
         if k in variables}
    logits = self.fake_quant.apply(v, x)
    if mutable:
      return logits, {'batch_stats': variables.get('batch_stats')}
    return logits


def wrap(model, variables, x_train) -> QuantAwareModel:
  """`model` fake-quantised for `variables`, calibrated on
  `hardware.representative(x_train)` (`[N, ...]` model inputs), the int8
  export's calibration set."""
  fq = fakequant.calibrate(model, variables,
                           hardware.representative(np.asarray(x_train)))
  return QuantAwareModel(model, fq)


def epoch_setup(config, model, splits, state, best: dict[str, Any],
                epoch: int, make_step: Callable, steps_per_epoch: int):
  """The train step, defence and best record of int8-aware epoch `epoch`.

  Args:
    config: the run's config (`model.num_classes` set); model: the Flax
      module.
    splits: the loaded 'train' and 'val' `Dataset`s.
    state: the trainer's `TrainState` at the start of the epoch.
    best: the trainer's best record (restarted at the first int8-aware
      epoch, keeping its layout).
    epoch: 0-based epoch index (>= `first_epoch(config)`).
    make_step: `make_step(module, defence) -> jitted train step`.
    steps_per_epoch: optimizer steps per epoch (the eps ramp's unit).

  Returns:
    `(train_step, defence, best)`; defence is None without
    `train.adversarial`.
  """
  variables = {'params': state.params}
  if state.batch_stats is not None:
    variables['batch_stats'] = state.batch_stats
  variables = jax.device_get(variables)  # the train step donates its state
  qmodel = wrap(model, variables, splits['train'].x)
  defence = adversarial.build(config, qmodel, splits,
                              num_classes=int(config.model.num_classes),
                              steps_per_epoch=steps_per_epoch)
  if epoch == first_epoch(config):
    best = {'val_accuracy': -1.0, 'epoch': -1, 'variables': variables,
            **(defence.best_template if defence else {})}
  return make_step(qmodel, defence), defence, best
