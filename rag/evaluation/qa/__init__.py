"""The few-shot prompt evaluation harness: grids of prompts x shots x selectors x retrieval x generators.

    from rag.evaluation.qa import run_grid
    result = run_grid("../shared/data/pubmedqa/pqal_dev.json", "pubmedqa", "runs/pqa", grid=load_grid("grid.yaml"))
    print(result.summary_md)

Importing this package loads no model and imports neither torch nor matplotlib.
"""

from __future__ import annotations

from rag.datasets.qa import FORMATS, QAItem, Readout, read_dataset
from rag.evaluation.qa.grid import Grid, RunConfig, default_grid, expand, load_grid
from rag.evaluation.qa.runner import RunResult, run_grid

__all__ = [
    "FORMATS",
    "Grid",
    "QAItem",
    "Readout",
    "RunConfig",
    "RunResult",
    "default_grid",
    "expand",
    "load_grid",
    "read_dataset",
    "run_grid",
]
