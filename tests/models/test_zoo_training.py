"""Zoo models inside the trainer (hooks) and the zoo's experiment configs."""

import importlib

import numpy as np
import pytest

from experiments.configs.train import digits_cnn
from tinyrobust import train
from tinyrobust.models import get_model

ZOO_CONFIGS = ['auritus_protonn', 'auritus_bonsai', 'auritus_fastrnn',
               'auritus_fastgrnn', 'auritus_tcn', 'speech_commands_dscnn',
               'speech_commands_tcn', 'cifar10_resnet8', 'cifar10_mcunet']


@pytest.mark.parametrize('name,kwargs,sparse_leaf,density,min_acc', [
    # data_init (k-means prototypes) + IHT of W.
    ('protonn', {'projection_dim': 8, 'num_prototypes': 30, 'gamma': 0.1,
                 'density_w': 0.5}, 'W', 0.5, 0.3),
    # train_kwargs (sigma_I annealing) + IHT of Z from 1/3 of training on.
    ('bonsai', {'projection_dim': 8, 'depth': 1, 'density_z': 0.5}, 'Z',
     0.5, 0.4),
])
def test_edgeml_models_train_with_hooks(tmp_path, name, kwargs, sparse_leaf,
                                        density, min_acc):
  c = digits_cnn.get_config()
  c.model.name = name
  c.model.kwargs = kwargs
  c.train.epochs = 3
  c.train.learning_rate = 1e-2
  c.train.progress_bar = False
  metrics, variables = train.train_and_evaluate(c, str(tmp_path))
  assert metrics['test_accuracy'] > min_acc
  w = np.asarray(variables['params'][sparse_leaf])
  assert np.mean(w != 0) <= density + 1.0 / w.size


@pytest.mark.parametrize('module', ZOO_CONFIGS)
def test_zoo_configs_build_their_models(module):
  mod = importlib.import_module(f'experiments.configs.train.{module}')
  assert 'Command:' in mod.__doc__ and ':quick' in mod.__doc__
  quick, full = mod.get_config('quick'), mod.get_config('full')
  assert quick.train.epochs < full.train.epochs
  for c in (quick, full):
    assert c.data.name in ('auritus', 'speech_commands', 'cifar10')
    assert c.attack.eps_grid[0] == 0.0
    num_classes = {'auritus': 9, 'speech_commands': 12, 'cifar10': 10}
    model = get_model(c.model.name, num_classes[c.data.name],
                      **c.model.kwargs.to_dict())
    assert model.example_input_shape()
    if c.data.name == 'auritus':
      assert c.data.options.split_by == 'participant'
  with pytest.raises(ValueError, match='quick'):
    mod.get_config('fast')
