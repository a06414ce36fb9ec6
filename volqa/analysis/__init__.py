"""Statistics over result tables: per-method descriptives, paired tests, rankings, reports.

Reads the tables :mod:`volqa.pipeline` writes; never reads volumes except through
:mod:`volqa.io` and :mod:`volqa.pipeline` (the report's slice panels). scipy, matplotlib and
jinja2 are imported by the functions that need them, so ``import volqa`` stays light.
"""

from __future__ import annotations

from .compare import Comparison, compare
from .load import Study, load_results, read_table

__all__ = ["Comparison", "Study", "compare", "load_results", "read_table"]
