"""Floor 9: reports and the terminal's tables: neutral tables drawn by two back ends, plus figures and the document.

:mod:`~ellrobust.report.tables` builds every table once as a neutral :class:`~ellrobust.report.table_model.Table`;
:mod:`~ellrobust.report.render_rich` draws it on the terminal and :mod:`~ellrobust.report.render_markdown`
in a report. Numbers are written by :mod:`~ellrobust.report.number_format`, the verdict's claims by
:mod:`~ellrobust.report.claim_sentences`, the CI check's summary by :mod:`~ellrobust.report.check_summary`.
:func:`ellrobust.report.writer.write_report` reads run folders, judges the claims
(:mod:`ellrobust.verdict.rules`), draws the figures (:mod:`~ellrobust.report.plots`) and writes
``report.md`` with ``figures/``.

Each family's report section, figures and terminal tables register themselves
(:mod:`~ellrobust.report.sections`) in the modules imported here; none of them loads matplotlib
before a figure is drawn, so the terminal can use the tables without it.
"""

from ellrobust.report import accuracy_sections, collapse_section, corruption_section, paired_section, patch_section

__all__ = ["accuracy_sections", "collapse_section", "corruption_section", "paired_section", "patch_section"]
