"""Write the verdict's rules (:data:`ellrobust.verdict.rules.RULES`) into the README's ``## Verdict`` section.

The rules are defined once, next to the code that applies them; the report renders them itself, the
README carries a copy between two markers that this script rewrites::

    python scripts/readme_rules.py

``tests/test_readme.py`` fails while the README's copy differs from the rules.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from ellrobust.verdict.rules import RULES

README = Path(__file__).resolve().parent.parent / "README.md"
START = "<!-- The rules below are generated from ellrobust.verdict.rules.RULES by scripts/readme_rules.py. -->"
END = "<!-- End of the generated rules. -->"


def _bullet(rule: str) -> str:
    """One rule as a bullet wrapped at 100 columns like the rest of the README, never inside ``95 %``."""
    kept = rule.replace(" %", "\N{NO-BREAK SPACE}%")  # textwrap breaks at ASCII whitespace only
    text = textwrap.fill(kept, width=100, initial_indent="* ", subsequent_indent="  ", break_on_hyphens=False)
    return text.replace("\N{NO-BREAK SPACE}%", " %")


def rules_block() -> str:
    """The rules as the README's bullet list, between the markers."""
    return "\n".join([START, *map(_bullet, RULES), END])


def synced(readme: str) -> str:
    """The README's text with its generated block replaced by the current rules."""
    start, end = readme.index(START), readme.index(END) + len(END)
    return readme[:start] + rules_block() + readme[end:]


if __name__ == "__main__":
    README.write_text(synced(README.read_text()))
