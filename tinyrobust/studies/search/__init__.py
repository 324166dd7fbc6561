"""The search study (Table 2): hand-crafted vs search with and without the
adversarial term, over models, boards and seeds.

    python -m experiments.main --mode=search_study \
        --config=experiments/configs/search_study/auritus.py:quick --workdir=...

`runner.py` runs (or resumes) every run, `report.py` writes the tables and
report, `definitions.py` holds the arms, metrics and the paired verdict.
"""

from tinyrobust.studies.search.runner import check_search_study_config
from tinyrobust.studies.search.runner import run_search_study

__all__ = ['check_search_study_config', 'run_search_study']
