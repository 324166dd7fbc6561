"""Robust, platform-aware architecture search (the study's Section 4).

    from tinyrobust import nas
    summary = nas.run_search(config, workdir)     # GP + LCB, trials.jsonl

Modules: `spaces` (search spaces as skopt dimensions), `objective` (the five
terms, presets, random scalarization), `designer` (`GPDesigner.suggest(n)` /
`update(trials)`), `costs` (flash / SRAM / FLOPs before training, board
budget), `candidate` (train + FGSM/PGD of one candidate), `executors`
(sequential / process pool / Ray), `journal` (append-only trials.jsonl),
`pareto` (Pareto CSV and plot), `search` (`run_search`), `synthetic`
(analytic test objectives).
"""

from tinyrobust.nas.designer import GPDesigner
from tinyrobust.nas.designer import make_designer
from tinyrobust.nas.designer import RandomDesigner
from tinyrobust.nas.executors import make_executor
from tinyrobust.nas.journal import Journal
from tinyrobust.nas.objective import PRESETS
from tinyrobust.nas.objective import scalarize
from tinyrobust.nas.objective import terms
from tinyrobust.nas.search import default_search_config
from tinyrobust.nas.search import run_search
from tinyrobust.nas.spaces import get_space
from tinyrobust.nas.spaces import SearchSpace
from tinyrobust.nas.spaces import SPACES

__all__ = [
    'GPDesigner', 'make_designer', 'RandomDesigner', 'make_executor',
    'Journal', 'PRESETS', 'scalarize', 'terms', 'default_search_config',
    'run_search', 'get_space', 'SearchSpace', 'SPACES',
]
