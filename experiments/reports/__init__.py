"""Write-ups of single experiments, read from what their runs saved: ``headline`` for
``experiments/headline.py`` and ``ladder`` for ``experiments/ladder.py``. They live beside their
experiments rather than in the library; run them from the repository root
(``python -m experiments.reports.ladder runs/ladder``)."""
