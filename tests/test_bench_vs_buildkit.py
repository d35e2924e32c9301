"""benchmarks/vs_buildkit.py: its flags, its corpus, and one case measured end to end against the
real BuildKit (dockerd from tests/fixtures/dockerd.py, docker-registry, busybox base)."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import vs_buildkit  # noqa: E402

from tests.differential import CASES_DIR  # noqa: E402


def test_bad_flags_are_one_line_and_exit_2(capsys, tmp_path):
    for argv, flag in ((["--samples", "0"], "--samples"), (["--case", "no_such_case"], "--case"),
                       (["--source", str(tmp_path)], "--source")):
        assert vs_buildkit.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith(flag), err
    assert list(tmp_path.iterdir()) == []  # nothing made before the flags are checked


def test_corpus_is_what_buildkit_builds_as_written():
    names = {c.name: c for c in vs_buildkit.all_cases()}
    for d in CASES_DIR.iterdir():
        if not (d / "Dockerfile").is_file():
            continue
        # A case with a "# reference:" header is built by BuildKit from another Dockerfile: not comparable work.
        header = [line for line in (d / "Dockerfile").read_text().splitlines() if line.startswith("#")]
        has_reference = any(line.split(":", 1)[0].strip("# ") == "reference" for line in header)
        assert (d.name in names) == (not has_reference), d.name
    for corpus in ("small-app", "debian-files", "python-venv", "big-context"):
        assert names[corpus].corpus
    assert names["debian-files"].base == "debian" and names["python-venv"].base == "python"
    quick = vs_buildkit.select_cases(vs_buildkit.parse_args(["--quick"]))
    assert [c.name for c in quick] == list(vs_buildkit.QUICK_CASES)
    assert {c.base for c in quick} == {"busybox", "debian"}  # the quick run still has a Debian-sized base


def test_one_case_end_to_end(tmp_path, capsys):
    """small-app, warm base, one sample each: real builds pushed (the script checks each manifest),
    figures consistent with the samples, nothing left in the scratch directory."""
    out = tmp_path / "figures.json"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    rc = vs_buildkit.main(["--case", "small-app", "--mode", "warm", "--samples", "1", "--json", str(out),
                           "--dir", str(scratch)])
    printed = capsys.readouterr()
    assert rc == 0, printed.err[-3000:] + printed.out[-3000:]
    report = json.loads(out.read_text())
    assert list(report["modes"]) == ["warm"] and report["samples"] == 1
    (case,) = report["modes"]["warm"]["cases"]
    assert case["case"] == "small-app" and not case["error"]
    assert len(case["pybuildless"]) == len(case["buildkit"]) == 1
    assert 0 < case["pybuildless"][0] < 120 and 0 < case["buildkit"][0] < 120
    assert case["buildkit"][0] == pytest.approx(case["buildkit_build"][0] + case["buildkit_push"][0])
    # warm base: the stage root came from the layer store, not from a download and unpack
    assert case["pybuildless_from_how"] == ["laid from the layer store"]
    summary = report["modes"]["warm"]["summary"]
    assert summary["total_ratio"] == pytest.approx(case["pybuildless"][0] / case["buildkit"][0])
    assert summary["median_ratio"] == pytest.approx(statistics.median([summary["total_ratio"]]))
    assert f"{summary['total_ratio']:.2f}" in printed.out
    assert list(scratch.iterdir()) == []  # registry, dockerd data root, store: all removed
