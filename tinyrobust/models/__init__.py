"""Model zoo: `get_model(name, num_classes, **kwargs)` -> Flax linen module.

Every model maps `x` (batch first) to logits with `__call__(x, train=False)`;
`train=False` (the default, used by attacks and profiling) freezes batch-norm
statistics and disables dropout. Families register themselves on import.
"""

from tinyrobust.models.registry import check_model
from tinyrobust.models.registry import get_model
from tinyrobust.models.registry import list_models
from tinyrobust.models.registry import register
from tinyrobust.models import simple  # mlp, cnn
from tinyrobust.models import (bonsai, dscnn, fastrnn, mcunet, protonn,  # zoo
                               resnet8, tcn)
from tinyrobust.models import har_large, imagenet, kws_large  # large models

__all__ = ['check_model', 'get_model', 'list_models', 'register']
