"""Statistics over result tables (per-method descriptives, paired tests, rankings, reports).

Reads the tables :mod:`volqa.pipeline` writes; never reads volumes except through
:mod:`volqa.io`. Empty for now.
"""
