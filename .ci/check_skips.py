"""Fail when a test was skipped that CI is expected to run.

Reads the junit XML of a pytest run. Every skipped test must match an entry of the allow-list
(one per line: a node id or fnmatch pattern, then `#` and the reason it may skip on CI). An
expected failure (xfail) is not a skip. Usage: check_skips.py JUNIT_XML ALLOW_LIST
"""

from __future__ import annotations

import fnmatch
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def allow_list(path: Path) -> list[str]:
    patterns = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        pattern, sep, reason = text.partition("#")
        if not sep or not reason.strip():
            sys.exit(f"{path}:{number}: an allowed skip needs a reason after '#'")
        patterns.append(pattern.strip())
    return patterns


def skipped_tests(junit: Path) -> list[tuple[str, str]]:
    """(node id, skip message) of each skipped test; xfails are left out."""
    found = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        skipped = case.find("skipped")
        if skipped is None or skipped.get("type") == "pytest.xfail":
            continue
        classname, name = case.get("classname", ""), case.get("name", "")
        module, _, cls = classname, "", ""
        # junit classname is "tests.test_x" or "tests.test_x.TestClass": turn it back into a node id
        parts = classname.split(".")
        for i in range(len(parts), 0, -1):
            candidate = Path(*parts[:i]).with_suffix(".py")
            if candidate.exists():
                module, cls = str(candidate), "::".join(parts[i:])
                break
        node = "::".join(p for p in (module, cls, name) if p)
        found.append((node, skipped.get("message", "")))
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    junit, allowed_path = Path(argv[1]), Path(argv[2])
    allowed = allow_list(allowed_path) if allowed_path.exists() else []
    skipped = skipped_tests(junit)
    bad = [(node, msg) for node, msg in skipped if not any(fnmatch.fnmatchcase(node, p) for p in allowed)]
    for node, msg in bad:
        print(f"skipped on CI: {node}: {msg}", file=sys.stderr)
    if bad:
        print(f"{len(bad)} test(s) skipped that CI must run (allow one only with a reason in {allowed_path})",
              file=sys.stderr)
        return 1
    print(f"skip check: {len(skipped)} skipped, all allowed by {allowed_path}" if skipped
          else "skip check: no test skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
