"""From files to rows: geometry, normalisation, the metric registry's binding to the engine,
one row (:class:`RowScorer`), resume, executors and the batch loop.

Data flow of one row: read (:mod:`volqa.io`) -> align (:mod:`.geometry`) -> normalise
(:mod:`.normalize`) -> metrics (:mod:`.context` over :mod:`volqa.engine`) -> fields
(:mod:`.row`); of a batch: manifest -> resume plan (:mod:`.resume`) -> executor
(:mod:`.executors`) -> journal, tables (:mod:`.batch`).
"""

from __future__ import annotations

from .api import score_manifest, score_pair
from .batch import BatchInterrupted
from .row import EngineResult, Prepared, RowFailure, RowJob, RowResult, RowScorer

__all__ = [
    "score_pair",
    "score_manifest",
    "BatchInterrupted",
    "RowScorer",
    "RowJob",
    "RowResult",
    "Prepared",
    "EngineResult",
    "RowFailure",
]
