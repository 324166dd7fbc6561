"""Test-wide settings: CPU, quiet TensorFlow, and the shared-data fixture."""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# One JAX device per test process (two pytest workers already share the
# cores); tests of the multi-device path start their own interpreters.
os.environ.setdefault('TINYROBUST_CPU_DEVICES', '1')

import pytest  # pylint: disable=g-import-not-at-top


@pytest.fixture
def shared_data_dir():
  """Path of the real offline data ($TINYROBUST_DATA_DIR).

  Skips when the variable is unset; fails when it is set to a missing folder
  or when TINYROBUST_REQUIRE_DATA=1 (CI sets it when it has the data), so a
  run meant to test real data never passes by skipping.
  """
  d = os.environ.get('TINYROBUST_DATA_DIR')
  required = os.environ.get('TINYROBUST_REQUIRE_DATA') == '1'
  if d and not os.path.isdir(d):
    pytest.fail(f'TINYROBUST_DATA_DIR={d!r} is not a directory.')
  if not d:
    if required:
      pytest.fail('TINYROBUST_REQUIRE_DATA=1 but TINYROBUST_DATA_DIR is unset.')
    pytest.skip('TINYROBUST_DATA_DIR is not set; real-data test skipped.')
  return d
