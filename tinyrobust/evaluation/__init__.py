"""Evaluation: validation, the evaluator, summary and sanity flags, records.

    inputs.py       check_eval_inputs, subset_indices, model_num_classes
    robustness.py   RobustnessEvaluator; robustness_run, evaluate_robustness,
                    evaluate_robustness_timed, prepare_run
    summary.py      the one metric definition (outcomes), rates, rows,
                    summarize, metrics_at
    sanity.py       every sanity flag (model checks, noise baseline, flags
                    read from the counts)
    records.py      write_results, print_results
    threat_space.py the `threat` section: input or signal space, precisions
                    (each dataset's signal space: `tinyrobust.data.signal`)
    deployed.py     float32 vs int8 (LiteRT, fake-quant) on the same examples
    routes.py       per-example routes to a deployed model, their worst case;
                    Square driven on a host scoring function (LiteRT)
    tflite_target.py  a bare .tflite as the attacked target (evaluate_tflite)
    scheduler.py    the host-side scheduler engine of the evaluator

The `attack` config section is read by `tinyrobust.attacks.config`; the
pipeline on a trained run is `tinyrobust.runs`.
"""

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
from tinyrobust.evaluation.scheduler import Scheduler
from tinyrobust.evaluation.summary import metrics_at
from tinyrobust.evaluation.summary import outcomes
from tinyrobust.evaluation.summary import summarize
from tinyrobust.evaluation.threat_space import attack_problem
from tinyrobust.evaluation.threat_space import check_threat
from tinyrobust.evaluation.threat_space import PRECISIONS
from tinyrobust.evaluation.threat_space import Problem

__all__ = [
    'attack_problem', 'check_eval_inputs', 'check_threat',
    'evaluate_deployed', 'evaluate_robustness', 'evaluate_robustness_timed',
    'metrics_at', 'model_num_classes', 'outcomes', 'PRECISIONS',
    'prepare_run', 'print_results', 'Problem', 'RESULTS_NAME',
    'RobustnessEvaluator', 'robustness_run', 'RobustnessRun', 'sanity_flags',
    'Scheduler', 'subset_indices', 'summarize', 'write_results',
]
