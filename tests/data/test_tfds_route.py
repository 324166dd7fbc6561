"""The TFDS route of the real-data loaders, under `tfds.testing.mock_data`.

No network: `mock_data` replaces the prepared records with random examples
of the right feature spec, so these tests exercise our builder calls, split
strings and decoding. They also resolve the builder's `code_path` /
`url_infos`, which a real `download_and_prepare` reads (and which imports
`importlib_resources`, missing from a clean install before it was pinned in
requirements.txt).
"""

import numpy as np
import pytest

tfds = pytest.importorskip('tensorflow_datasets')

from tinyrobust.data import cifar10  # pylint: disable=g-import-not-at-top
from tinyrobust.data import speech_commands  # pylint: disable=g-import-not-at-top


@pytest.mark.parametrize('name', ['cifar10', 'speech_commands'])
def test_builder_code_path_resolves(name):
  cls = type(tfds.builder(name))
  assert cls.code_path is not None and cls.code_path.name.endswith('.py')
  assert cls.url_infos  # checksums read from beside the builder's code


def test_cifar10_tfds_route(tmp_path):
  with tfds.testing.mock_data(num_examples=12):
    for split in ('train', 'val', 'test'):
      ds = cifar10.cifar10(split, source='tfds', tfds_data_dir=str(tmp_path))
      assert ds.x.shape == (12, 32, 32, 3) and ds.x.dtype == np.float32
      assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0
      # pixel / 255 of uint8 images: every value is k / 255.
      np.testing.assert_allclose(ds.x * 255, np.round(ds.x * 255), atol=1e-4)
      assert ds.y.shape == (12,) and set(ds.y.tolist()) <= set(range(10))
      assert ds.meta['source'] == 'tfds:cifar10'
    assert "'train[90.0%:]'" in ds.meta['protocol'] or split == 'test'
    with pytest.raises(ValueError, match='png_check'):
      cifar10.cifar10('png_check', source='tfds')


def test_speech_commands_tfds_route(tmp_path):
  with tfds.testing.mock_data(num_examples=5):
    wave = speech_commands.speech_commands('val', source='tfds',
                                           tfds_data_dir=str(tmp_path))
    mfcc = speech_commands.speech_commands('test', source='tfds',
                                           features='mfcc',
                                           tfds_data_dir=str(tmp_path))
  assert wave.x.shape == (5, 16000) and wave.x.dtype == np.float32
  assert np.abs(wave.x).max() <= 1.0  # int16 / 32768
  assert set(wave.y.tolist()) <= set(range(12))
  assert wave.meta['source'] == 'tfds:speech_commands'
  assert mfcc.x.shape == (5, 49, 10) and np.isfinite(mfcc.x).all()
