"""dockerfile/instructions.py: the instruction kinds live in family modules loaded on first use, and
the code that dispatches on an instruction's kind compares keywords instead of classes; these checks
keep the keyword tables and the classes in step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pybuildless.builder import commands
from pybuildless.dockerfile import instruction_parser
from pybuildless.dockerfile import instructions as ins
from pybuildless.errors import DockerfileError

ROOT = Path(__file__).resolve().parent.parent


def test_every_keyword_names_exactly_one_kind() -> None:
    keywords = [kind.keyword for kind in ins.ALL_TYPES]
    assert len(set(keywords)) == len(keywords)
    # the parser's keyword list (BuildKit's instruction set) is the set of kinds
    assert set(keywords) == set(instruction_parser.KNOWN_KEYWORDS)


def test_expanding_keywords_are_the_kinds_with_expand() -> None:
    assert ins.EXPANDING_KEYWORDS == {kind.keyword for kind in ins.ALL_TYPES if hasattr(kind, "expand")}
    assert {kind.keyword for kind in ins.EXPANDING_TYPES} == ins.EXPANDING_KEYWORDS


def test_every_kind_but_from_has_a_step() -> None:
    assert set(commands._STEPS) == {kind.keyword for kind in ins.ALL_TYPES} - {"FROM"}
    with pytest.raises(DockerfileError, match="FROM is not supported"):
        commands.step_for(ins.From(image="scratch", line=3))


def test_a_family_loads_when_one_of_its_names_is_read() -> None:
    script = (
        "import json, sys\n"
        "from pybuildless.dockerfile import instructions as ins\n"
        "before = sorted(m for m in sys.modules if m.startswith('pybuildless.dockerfile.instructions_'))\n"
        "run = ins.Run\n"
        "after = sorted(m for m in sys.modules if m.startswith('pybuildless.dockerfile.instructions_'))\n"
        "print(json.dumps([before, after, run.__module__, 'Run' in vars(ins), 'Copy' in dir(ins)]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    before, after, module, cached, listed = json.loads(proc.stdout)
    assert before == []
    assert after == ["pybuildless.dockerfile.instructions_run"]
    assert module == "pybuildless.dockerfile.instructions_run"
    assert cached and listed  # kept in the module once loaded; dir() lists the names not loaded yet


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="'pybuildless.dockerfile.instructions' has no attribute"):
        ins.NoSuchInstruction  # noqa: B018
