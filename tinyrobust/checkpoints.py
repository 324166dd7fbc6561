"""A training run's workdir: its files, pinned config and checkpoints.

Layout (`train.train_and_evaluate` writes it, `train.load_trained` reads it):
  config.json      the full config (a restart with a different config fails,
                   except in `MUTABLE_FIELDS`)
  metrics.jsonl    one record per epoch, then one `final` record
  latest.ckpt      train state + epoch + best-so-far + the epoch's record
  best.ckpt        eval-mode variables with the best validation accuracy
  final_metrics.json

An epoch commits in one order (`save_checkpoint`): best.ckpt, latest.ckpt,
then the record's line; `restore_checkpoint` reconciles the journal with
the checkpoint, so a run killed anywhere resumes with every finished epoch
recorded once. A journal with finished epochs but no latest.ckpt (deleted)
is an error naming both files (`check_journal_without_checkpoint`), never a
silent restart; `RESTART_FILES` are what starting over moves aside. `state` is a `train.TrainState` (any flax pytree).
"""

from __future__ import annotations

import json
import os
from typing import Any

from absl import logging
import flax
import jax

from tinyrobust import config_io
from tinyrobust import io

LATEST, BEST, METRICS, FINAL = ('latest.ckpt', 'best.ckpt', 'metrics.jsonl',
                                'final_metrics.json')
# What `train_and_evaluate(restart=True)` moves aside (`workdir.set_aside`).
RESTART_FILES = (METRICS, LATEST, BEST, FINAL, 'config.json')
# Fields that may change when a run is resumed (they do not change results).
MUTABLE_FIELDS = ('train.progress_bar', 'train.eval_batch_size')


def prepare_workdir(config, workdir: str) -> None:
  """Pins the config in `workdir` (after every check has passed).

  A workdir that holds only a config (no checkpoint yet) takes the new one;
  with a checkpoint, a differing config is refused except in the cosmetic
  fields `MUTABLE_FIELDS`.
  """
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f'--workdir {workdir!r} is a file, not a directory.')
  os.makedirs(workdir, exist_ok=True)
  if not os.access(workdir, os.W_OK):
    raise ValueError(f'--workdir {workdir!r} is not writable.')
  started = os.path.exists(os.path.join(workdir, LATEST))
  config_io.pin_config(config, os.path.join(workdir, 'config.json'),
                       mutable=MUTABLE_FIELDS, replace_if=not started)


def save_checkpoint(workdir: str, state: Any, epoch: int,
                    best: dict[str, Any], record: dict[str, Any]) -> None:
  """Commits one epoch: best.ckpt, latest.ckpt (with the epoch's record),
  then the record's line in metrics.jsonl.

  A kill between the checkpoint and the line leaves a checkpoint whose record
  is missing from the journal; `restore_checkpoint` appends it.
  """
  if best['epoch'] == epoch:
    io.save_pytree(os.path.join(workdir, BEST), best['variables'])
  io.save_pytree(os.path.join(workdir, LATEST), {
      'state': jax.device_get(state), 'epoch': epoch, 'best': best,
      'record': json.dumps(record, sort_keys=True)})
  io.append_jsonl(os.path.join(workdir, METRICS), record)


def restore_checkpoint(workdir: str, state: Any, best: dict[str, Any]
                       ) -> tuple[Any, dict[str, Any], int]:
  """Resumes from latest.ckpt: `(state, best, start_epoch)`.

  The restored tree must match the model's (names and shapes); the
  metrics journal is reconciled with the checkpoint so every finished epoch
  has exactly one record.
  """
  path = os.path.join(workdir, LATEST)
  if not os.path.exists(path):
    check_journal_without_checkpoint(workdir)
    return state, best, 0
  raw = io.load_pytree(path)
  template = {'state': flax.serialization.to_state_dict(state),
              'best': flax.serialization.to_state_dict(best)}
  mismatch = io.tree_shape_mismatch(template['state'], raw['state'])
  if mismatch:
    raise ValueError(f'{path} was written by a different model or optimizer '
                     f'(differs at {", ".join(mismatch[:5])}). Delete the '
                     'workdir or use the config it was trained with.')
  state = flax.serialization.from_state_dict(state, raw['state'])
  best = flax.serialization.from_state_dict(best, raw['best'])
  epoch = int(raw['epoch'])
  _reconcile_metrics(os.path.join(workdir, METRICS), epoch,
                     json.loads(raw.get('record') or 'null'))
  logging.info('Resumed %s at epoch %d (step %d).', workdir, epoch + 1,
               int(state.step))
  return state, best, epoch + 1


def check_journal_without_checkpoint(workdir: str) -> None:
  """A run with no latest.ckpt must have no finished epoch in its journal.

  Raises:
    ValueError: metrics.jsonl records finished epochs (or the final record)
      but latest.ckpt is gone: naming both files and the two ways on
      (restore the checkpoint; or start over, moving the old files aside).
  """
  path = os.path.join(workdir, METRICS)
  records = io.read_jsonl(path) if os.path.exists(path) else []
  epochs = [r.get('epoch') for r in records if not r.get('final')]
  final = any(r.get('final') for r in records)
  if not epochs and not final:
    return
  ints = [e for e in epochs if isinstance(e, int)]
  what = (f'{len(epochs)} finished epoch(s) (last: epoch '
          f'{max(ints) if ints else "-"})'
          + (' and the final record' if final else ''))
  raise ValueError(
      f'{path} records {what}, but {os.path.join(workdir, LATEST)} is '
      'missing: the run cannot resume where its journal stops, and training '
      'from epoch 1 would append a second history to it. Either restore '
      f'{LATEST} (e.g. from a backup) to resume, or start over: rerun with '
      '--restart (python -m experiments.main; train_and_evaluate(..., '
      'restart=True)), which moves metrics.jsonl, the checkpoints, '
      f'{FINAL} and config.json aside into {workdir}/replaced_<time>/.')


def _reconcile_metrics(path: str, epoch: int, record) -> None:
  """Keeps epoch records 1..epoch+1 once each; appends the checkpointed one
  when the kill came before its line was written."""
  records = io.read_jsonl(path, repair=True)
  keep = [r for r in records
          if not r.get('final') and r.get('epoch', 0) <= epoch + 1]
  seen = {r.get('epoch') for r in keep}
  if record is not None and record['epoch'] not in seen:
    keep.append(record)
  if keep != records:
    io.write_jsonl(path, keep)


def is_finished(workdir: str) -> bool:
  """True when the run in `workdir` has written its final record."""
  return os.path.exists(os.path.join(workdir, FINAL))
