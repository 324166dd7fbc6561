"""Re-export shim: `tinyrobust.evaluate` is `tinyrobust.evaluation`.

Kept because the README and users name `tinyrobust.evaluate.evaluate_robustness`.
New code imports `tinyrobust.evaluation` (the evaluator, summary, records)
and `tinyrobust.attacks.config` (the `attack` section); this module only
re-exports them and defines nothing.
"""

# pylint: disable=unused-import
from tinyrobust.attacks.config import attack_config
from tinyrobust.attacks.config import attack_options
from tinyrobust.attacks.config import build_attacks
from tinyrobust.attacks.config import COMMON_OPTIONS
from tinyrobust.attacks.config import default_attack_config
from tinyrobust.evaluation.deployed import evaluate_deployed
from tinyrobust.evaluation.inputs import check_eval_inputs
from tinyrobust.evaluation.inputs import model_num_classes
from tinyrobust.evaluation.inputs import subset_indices
from tinyrobust.evaluation.records import print_results
from tinyrobust.evaluation.records import RESULTS_NAME
from tinyrobust.evaluation.records import write_results
from tinyrobust.evaluation.robustness import evaluate_robustness
from tinyrobust.evaluation.robustness import evaluate_robustness_timed
from tinyrobust.evaluation.robustness import prepare_run
from tinyrobust.evaluation.robustness import RobustnessEvaluator
from tinyrobust.evaluation.robustness import robustness_run
from tinyrobust.evaluation.robustness import RobustnessRun
from tinyrobust.evaluation.sanity import sanity_flags
from tinyrobust.evaluation.summary import metrics_at
from tinyrobust.evaluation.summary import summarize
