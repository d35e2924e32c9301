"""Modules stay small enough to read in one sitting: at most 400 lines each.

Generated data (a module whose docstring starts with its "(GENERATED: do not edit)" marker, such as
the syscall tables written by tools/gen_syscalls.py) is exempt: nobody reads it as code.
"""

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pybuildless"
LIMIT = 400


def _generated(text: str) -> bool:
    return "(GENERATED: do not edit)" in text.split("\n", 1)[0]


def test_every_module_is_at_most_400_lines() -> None:
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        if lines > LIMIT and not _generated(text):
            too_long.append(f"{path.relative_to(PACKAGE.parent)}: {lines} lines")
    assert not too_long, "modules over the size limit:\n" + "\n".join(too_long)


def test_the_generated_marker_is_only_on_the_first_line(tmp_path: Path) -> None:
    assert _generated('"""Syscall numbers (GENERATED: do not edit).\n')
    assert not _generated('"""A module.\n\nNot (GENERATED: do not edit) here.\n')
