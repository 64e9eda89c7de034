"""``ellrobust check --junit FILE``: the comparisons as JUnit XML, which GitLab, Jenkins and most CI systems read.

One ``testcase`` per compared number (:class:`~ellrobust.verdict.regression.Comparison`): a regression
or a missing row is a ``failure`` carrying the line the markdown summary gives it, a derived statistic
compared by presence only is ``skipped``, and the rest pass. The suite's counts are those of the
summary. Written with :mod:`xml.etree.ElementTree`, which escapes every attribute and text, so a
model name cannot break the file.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from ellrobust.core.files import atomic_write
from ellrobust.report.check_summary import comparison_message, comparison_name
from ellrobust.verdict.regression import CheckResult, Comparison, Status, describe_setup

#: The suite's name, and the prefix of every test case's class name (``ellrobust.check.<metric>``).
SUITE = "ellrobust.check"


def _testcase(comparison: Comparison, index: int) -> ET.Element:
    """A test case named after its number; ``index`` keeps names unique if two read alike."""
    case = ET.Element(
        "testcase", name=f"{index:04d} {comparison_name(comparison)}", classname=f"{SUITE}.{comparison.metric}"
    )
    message = comparison_message(comparison)
    if comparison.failed:
        failure = ET.SubElement(case, "failure", message=message, type=comparison.status.value)
        failure.text = message
    elif comparison.status is Status.SKIPPED:
        ET.SubElement(case, "skipped", message=message)
    else:
        ET.SubElement(case, "system-out").text = message
    return case


def junit_xml(result: CheckResult, run_name: str, baseline_name: str) -> str:
    """The check as a JUnit XML document (one ``testsuites`` holding one ``testsuite``)."""
    comparisons = result.comparisons
    counts = {
        "tests": len(comparisons),
        "failures": len(result.failures),
        "errors": 0,
        "skipped": sum(c.status is Status.SKIPPED for c in comparisons),
    }
    root = ET.Element("testsuites", name=SUITE, **{k: str(v) for k, v in counts.items()})
    suite = ET.SubElement(root, "testsuite", name=SUITE, **{k: str(v) for k, v in counts.items()})
    properties = ET.SubElement(suite, "properties")
    described = {
        "run": run_name,
        "baseline": baseline_name,
        "setup": describe_setup(result.setup),
        "new_rows": str(result.new_rows),
        **({"tolerance": f"{result.tolerance:g}"} if result.tolerance is not None else {}),
    }
    for name, value in described.items():
        ET.SubElement(properties, "property", name=name, value=value)
    suite.extend(_testcase(c, i) for i, c in enumerate(comparisons, 1))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(result: CheckResult, path: Path, run_name: str, baseline_name: str) -> None:
    """Write :func:`junit_xml` to ``path`` (UTF-8, atomically)."""
    atomic_write(Path(path), junit_xml(result, run_name, baseline_name))
