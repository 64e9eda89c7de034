"""The README's copy of the verdict rules is the text the code applies (:data:`ellrobust.verdict.rules.RULES`).

The rules are written once, in ``ellrobust/verdict/rules.py``; the report renders them itself and the README
holds a generated copy in its ``## Verdict`` section. After changing the rules, regenerate the copy::

    python scripts/readme_rules.py
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("readme_rules", ROOT / "scripts" / "readme_rules.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_states_the_verdict_rules_the_code_applies():
    script = _script()
    verdict = (ROOT / "README.md").read_text().split("\n## Verdict\n", 1)[1].split("\n## ", 1)[0]
    assert script.rules_block() in verdict, (
        "README.md's rules differ from ellrobust.verdict.rules.RULES: run python scripts/readme_rules.py"
    )


def test_the_generated_copy_keeps_every_rule_whole():
    script = _script()
    block = script.rules_block()
    bullets = [" ".join(b.split()) for b in block.split("\n* ")[1:]]
    assert bullets[-1].endswith(script.END)
    bullets[-1] = bullets[-1].removesuffix(script.END).strip()
    assert bullets == [" ".join(rule.split()) for rule in script.RULES]
