"""Re-export shim: the sanity checks live in `tinyrobust.evaluation.sanity`.

Kept because the README names `tinyrobust.sanity`; it defines nothing.
"""

# pylint: disable=unused-import
from tinyrobust.evaluation.sanity import BLACKBOX
from tinyrobust.evaluation.sanity import CHECK_EXAMPLES
from tinyrobust.evaluation.sanity import compare_flags
from tinyrobust.evaluation.sanity import LARGE_EPS_ROBUST
from tinyrobust.evaluation.sanity import large_eps_flags
from tinyrobust.evaluation.sanity import make_noise
from tinyrobust.evaluation.sanity import model_checks
from tinyrobust.evaluation.sanity import sanity_flags
from tinyrobust.evaluation.sanity import ZERO_GRAD_FRACTION
