"""Errors met while executing an instruction name the Dockerfile line, with BuildKit's excerpt
of the lines around it (text logs) or a structured ``dockerfile`` field (JSON logs); the build
exits non-zero without a traceback. The excerpt layout is BuildKit's Source.Print
(moby/buildkit solver/errdefs/source.go@eeb7b65ab7d6): ``NAME:LINE``, a rule of 20 dashes,
`` %3d | >>> text`` for the failing lines and 2 lines of context either side."""

from __future__ import annotations

import json
import os

import pytest

from pybuildless.dockerfile.excerpt import excerpt
from tests.buildkit import executor, write_context

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")]

RULE = "-" * 20


def test_excerpt_layout_is_buildkits():
    text = "FROM a\nRUN one\nRUN two\nCOPY x /y\nRUN three\nRUN four\nRUN five\n"
    assert excerpt(text, "/ctx/Dockerfile", 4) == [
        "Dockerfile:4", RULE, "   2 |     RUN one", "   3 |     RUN two", "   4 | >>> COPY x /y",
        "   5 |     RUN three", "   6 |     RUN four", RULE]
    # a multi-line range gets one line of context either side, and stops at the file's ends
    assert excerpt("FROM a\nRUN a \\\n  b\n", "Dockerfile", 2, 3) == [
        "Dockerfile:2", RULE, "   1 |     FROM a", "   2 | >>> RUN a \\", "   3 | >>>   b", "   4 |     ", RULE]
    assert excerpt("FROM a", "Dockerfile", 1) == ["Dockerfile:1", RULE, "   1 | >>> FROM a", RULE]
    assert excerpt("FROM a", "Dockerfile", 9) == []


def _fail(tmp_path, registry, dockerfile: str, *args: str):
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile})
    proc = executor("-c", str(ctx), "-d", registry.ref("fidelity/errors:1"), *args, cwd=tmp_path, check=False)
    stderr = proc.stderr.decode()
    assert proc.returncode != 0
    assert "Traceback" not in stderr
    return proc, stderr


@pytest.mark.parametrize("case", ["missing-source", "missing-image", "bad-reference", "unknown-from", "run-status"])
def test_instruction_errors_name_the_line_with_an_excerpt(tmp_path, registry, busybox_image, case):
    dockerfile, line, expect = {
        "missing-source": (f"FROM {busybox_image}\n\nCOPY does-not-exist /x\n", 3, "does-not-exist"),
        "missing-image": (f"FROM {registry.ref('no/such-image:nope')}\nRUN true\n", 1, "MANIFEST_UNKNOWN"),
        "bad-reference": ("FROM UPPER/Case:tag\n", 1, "must be lowercase"),
        "unknown-from": (f"FROM {busybox_image}\nCOPY --from=nosuchstage /a /b\n", 2, "--from=nosuchstage"),
        "run-status": (f"FROM {busybox_image}\nRUN exit 3\n", 2, "exited with code 3"),
    }[case]
    proc, stderr = _fail(tmp_path, registry, dockerfile)
    lines = dockerfile.split("\n")
    shown = excerpt(dockerfile, "Dockerfile", line)
    assert f"Dockerfile:{line}\n{RULE}\n" in stderr
    assert "\n".join(shown[2:]) in stderr  # the numbered lines and the closing rule
    assert f" {line:3d} | >>> {lines[line - 1]}" in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and f"Dockerfile:{line}: " in last and expect in last, last
    if case == "run-status":
        assert proc.returncode == 3  # the command's own status, as docker build gives it


def test_json_logs_carry_the_location_as_a_field(tmp_path, registry, busybox_image):
    dockerfile = f"FROM {busybox_image}\nRUN true\nCOPY does-not-exist /x\n"
    _, stderr = _fail(tmp_path, registry, dockerfile, "--log-format", "json")
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    located = [r for r in records if "dockerfile" in r]
    assert len(located) == 1, records
    field = located[0]["dockerfile"]
    assert field["file"].endswith("/Dockerfile") and field["line"] == 3 and field["end_line"] == 3
    assert field["excerpt"] == excerpt(dockerfile, "Dockerfile", 3)
    assert located[0]["level"] == "error" and "does-not-exist" in located[0]["msg"]


def test_parse_errors_get_the_excerpt_too(tmp_path, registry, busybox_image):
    _, stderr = _fail(tmp_path, registry, f"FROM {busybox_image}\nBOGUS x\n")
    assert f"Dockerfile:2\n{RULE}\n" in stderr and "   2 | >>> BOGUS x" in stderr
