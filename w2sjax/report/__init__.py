"""Results, tables, figures and summaries, made from what runs saved: the result-row schema and
its statistics (:mod:`~w2sjax.report.results`), bootstrap intervals
(:mod:`~w2sjax.report.intervals`), the text table (:mod:`~w2sjax.report.tables`), figures
(:mod:`~w2sjax.report.plots`), the HTML page (:mod:`~w2sjax.report.html`), the suite summary
(:mod:`~w2sjax.report.suite`) and the benchmark's protocol, artefacts and summary.

Importing this package imports none of its modules. ``w2sjax.report`` was once the tables module
itself: its names still resolve here, to :mod:`w2sjax.report.tables`, with a
``DeprecationWarning``, for one release.
"""

# The old module's public names (its own and the statistics it re-exported).
_TABLES_NAMES = frozenset({
    "GROUP_KEYS", "CEILING_MARGIN", "load_results", "summarize", "table", "format_table", "ceiling_warnings",
    "below_majority", "write_plots", "write_html", "bootstrap_pgr", "interval", "mean_pm", "number",
    "pgr_of_means", "t_interval",
})


def __getattr__(name: str):
    if name not in _TABLES_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    import warnings

    warnings.warn(f"w2sjax.report.{name} is deprecated and will be removed in the next release; "
                  f"use w2sjax.report.tables.{name}", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module("w2sjax.report.tables"), name)
