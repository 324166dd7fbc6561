"""The misuse sweep's shared fixtures, built once per test session."""

import pytest

from tests.misuse import sweep


@pytest.fixture(scope='session')
def misuse_ctx(tmp_path_factory):
  """A `sweep.Ctx` in a session temp folder (its trained runs are shared)."""
  return sweep.Ctx(str(tmp_path_factory.mktemp('misuse')))
