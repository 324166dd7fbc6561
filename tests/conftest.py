"""Test-wide settings: CPU, quiet TensorFlow, and the shared-data fixture."""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest  # pylint: disable=g-import-not-at-top


@pytest.fixture
def shared_data_dir():
  """Path of the real offline data ($TINYROBUST_DATA_DIR); skips when unset."""
  d = os.environ.get('TINYROBUST_DATA_DIR')
  if not d or not os.path.isdir(d):
    pytest.skip('TINYROBUST_DATA_DIR is not set; real-data test skipped.')
  return d
