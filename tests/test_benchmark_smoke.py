"""The build benchmark runs end to end on one small case and prints its table (no timing assertions)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.buildkit import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)"),
    pytest.mark.skipif(shutil.which("buildah") is None, reason="buildah is not installed"),
]


def test_build_benchmark_prints_ratios(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/build.py"), "--case", "empty_diff_run",
                           "--samples", "2", "--dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    # median ±noise for each builder, then the ratio of the medians ±their combined noise
    row = re.search(r"^empty_diff_run\s+(\d+\.\d+) ±\s*(\d+)%\s+(\d+\.\d+) ±\s*(\d+)%\s+(\d+\.\d+) ±\s*(\d+)%",
                    proc.stdout, re.M)
    assert row, proc.stdout
    ours, ours_noise, theirs, theirs_noise, ratio, ratio_noise = map(float, row.groups())
    assert ours > 0 and theirs > 0 and ratio == pytest.approx(ours / theirs, abs=0.011)
    assert abs(ratio_noise - (ours_noise + theirs_noise)) <= 1
    assert re.search(r"^median ratio \(pybuildless/buildah\)\s+\d+\.\d+ ±", proc.stdout, re.M), proc.stdout
    assert list(tmp_path.iterdir()) == [], "scratch directory left behind"


def test_build_benchmark_rejects_unknown_case(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/build.py"), "--case", "no_such_case",
                           "--dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no_such_case" in proc.stderr
