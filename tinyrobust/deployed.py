"""Re-export shim: the int8 evaluation lives in `tinyrobust.evaluation.deployed`
(the LiteRT and TFLite Micro runners in `tinyrobust.hardware.litert`).

Kept because the README names `tinyrobust.deployed.evaluate_deployed`; it
defines nothing.
"""

# pylint: disable=unused-import
from tinyrobust.attacks.config import with_eps_scale
from tinyrobust.evaluation.deployed import as_results
from tinyrobust.evaluation.deployed import evaluate_deployed
from tinyrobust.evaluation.deployed import print_deployed
from tinyrobust.evaluation.deployed import PROTOCOL
from tinyrobust.evaluation.deployed import rows
from tinyrobust.evaluation.deployed import TFLM_SAMPLES
from tinyrobust.evaluation.threat_space import check_precisions
from tinyrobust.evaluation.threat_space import PRECISIONS
from tinyrobust.hardware.litert import LiteRT
from tinyrobust.hardware.litert import tflm_check
from tinyrobust.hardware.litert import tflm_outputs
