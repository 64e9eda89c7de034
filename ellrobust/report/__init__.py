"""Reports: a markdown document plus PNG figures, rebuilt from run folders on disk alone.

:func:`ellrobust.report.writer.write_report` reads each folder's ``results.csv`` and ``run.json``,
judges the claims (:mod:`ellrobust.verdict`), renders the tables (:mod:`~ellrobust.report.tables`)
and figures (:mod:`~ellrobust.report.plots`) and writes ``report.md`` with ``figures/``.

This file imports nothing: :mod:`ellrobust.verdict` and the CLI use the pure helpers
(:mod:`~ellrobust.report.frame`, :mod:`~ellrobust.report.labels`) without loading the document
and its figures, and the document uses the verdict, so the modules form no import circle.
"""
