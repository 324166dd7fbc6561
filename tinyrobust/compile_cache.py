"""JAX's persistent compilation cache, on by default in a user cache folder.

Attack and training programs compile for seconds to minutes on CPU; with
the cache a second run of the same program (a resumed evaluation, a study
re-run, another model of the same shape) loads it from disk instead.

The folder is, in order: the `path` argument, `$TINYROBUST_CACHE_DIR`,
`$XDG_CACHE_HOME/tinyrobust/jax`, `~/.cache/tinyrobust/jax`. Set
`TINYROBUST_COMPILE_CACHE=0` to turn it off. A cache folder the user already
configured (`jax_compilation_cache_dir`) is left alone.
"""

from __future__ import annotations

import os

from absl import logging
import jax

MIN_COMPILE_SECONDS = 0.5  # programs compiling faster are not worth a file


def default_dir() -> str:
  """The cache folder used when no path is given (see the module docstring)."""
  if os.environ.get('TINYROBUST_CACHE_DIR'):
    return os.environ['TINYROBUST_CACHE_DIR']
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(
      os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'tinyrobust', 'jax')


def enable(path: str | None = None) -> str | None:
  """Turns the persistent cache on; returns its folder (None: off).

  An explicit `path` always wins; otherwise a folder already configured in
  `jax.config` is kept. A folder that cannot be created only logs a warning
  (the cache is an optimisation, never a reason to fail a run).
  """
  if path is None:
    if os.environ.get('TINYROBUST_COMPILE_CACHE', '1') == '0':
      return None
    current = jax.config.jax_compilation_cache_dir
    if current:
      return current
    path = default_dir()
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    logging.warning('Compilation cache %s unavailable (%s); compiling '
                    'without it.', path, e)
    return None
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs',
                    MIN_COMPILE_SECONDS)
  return path
