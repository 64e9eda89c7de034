"""Check that every tracked Python file parses to the same AST as at a given git revision.

For each ``*.py`` file tracked by git (``git ls-files '*.py'``) the AST of the file at ``REV``
(``git show REV:path``) is compared with the AST of the working-tree file, as
``ast.dump(tree, include_attributes=False)``. Positions and comments are therefore ignored; so is
whitespace inside docstrings (the first statement of a module, class or function body when it is an
expression holding a string constant), where every whitespace run is collapsed to one space and the
ends are stripped. Every other string constant must be identical; adjacent literals ``"a" "b"`` are
merged by the parser, so splitting a long string into implicitly concatenated pieces keeps the AST.

Run from anywhere inside the repository::

    python scripts/ast_equal.py REV

Prints each file whose AST differs (or that no longer parses, or is missing from the working tree)
and exits 1 if there is any; files that do not exist at ``REV`` are named on stderr and skipped.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

_DOCSTRING_OWNERS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, check=False)


def normalised_dump(source: bytes | str) -> str:
    """The AST dump of ``source`` with docstring whitespace collapsed."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if not isinstance(node, _DOCSTRING_OWNERS) or not node.body:
            continue
        first = node.body[0]
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            first.value.value = re.sub(r"\s+", " ", first.value.value).strip()
    return ast.dump(tree, include_attributes=False)


def differing(rev: str, root: Path) -> list[str]:
    """Paths of the tracked Python files whose AST differs between ``rev`` and the working tree."""
    listed = _git(root, "ls-files", "-z", "--", "*.py")
    if listed.returncode:
        sys.exit(listed.stderr.decode())
    if _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").returncode:
        sys.exit(f"unknown revision: {rev}")
    changed = []
    for path in filter(None, listed.stdout.decode().split("\0")):
        old = _git(root, "show", f"{rev}:{path}")
        if old.returncode:
            print(f"{path}: not at {rev}, skipped", file=sys.stderr)
            continue
        try:
            new = (root / path).read_bytes()
        except FileNotFoundError:
            changed.append(f"{path} (missing from the working tree)")
            continue
        try:
            same = normalised_dump(old.stdout) == normalised_dump(new)
        except SyntaxError as error:
            changed.append(f"{path} (syntax error: {error})")
            continue
        if not same:
            changed.append(path)
    return changed


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python scripts/ast_equal.py REV", file=sys.stderr)
        return 2
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True)
    changed = differing(argv[0], Path(top.stdout.strip()))
    for path in changed:
        print(path)
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
