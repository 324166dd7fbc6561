"""The robustness study (TinyML vs large models) as one command.

    python -m experiments.main --mode=study \
        --config=experiments/configs/study/builtin.py:quick --workdir=...

`run_study(config, workdir)` trains, attacks and profiles every model of
every task (cached per stage, resumable, through the search's executors)
and writes `table1.csv`, `gap.csv`, `curves.csv`, `figures/*.png`,
`report.md` and `summary.json`. See `config.py` for the config schema.
"""

from tinyrobust.studies.robustness.config import check_study_config
from tinyrobust.studies.robustness.config import TASKS
from tinyrobust.studies.robustness.runner import run_study

__all__ = ['check_study_config', 'run_study', 'TASKS']
