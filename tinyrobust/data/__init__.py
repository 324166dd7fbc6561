"""Datasets: one `load(name, split, **options)` API over every source.

Importing this package registers the built-in sources (`digits`,
`basic_motions`) and the real-data pipelines.
"""

from tinyrobust.data.base import check_dataset
from tinyrobust.data.base import DATA_DIR_ENV
from tinyrobust.data.base import Dataset
from tinyrobust.data.base import list_datasets
from tinyrobust.data.base import load
from tinyrobust.data.base import register_source
from tinyrobust.data import builtin  # registers digits, basic_motions
from tinyrobust.data import auritus, cifar10, speech_commands  # registers
from tinyrobust.data.streaming import stream

__all__ = ['check_dataset', 'DATA_DIR_ENV', 'Dataset', 'list_datasets', 'load',
           'register_source', 'stream']
