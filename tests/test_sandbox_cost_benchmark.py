"""benchmarks/sandbox_cost.py runs end to end on a few steps and prints its table (no timing assertions)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.buildkit import ROOT

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="the chroot isolation needs root")]


def test_sandbox_cost_prints_every_variant():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/sandbox_cost.py"), "--steps", "2", "--samples", "1",
                           "--no-before"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for variant in ("hardened", "no-seccomp", "no-masks", "neither"):
        row = re.search(rf"^{variant}\s+" + r"\s+".join([r"(\d+\.\d+)"] * 5) + "$", proc.stdout, re.M)
        assert row, proc.stdout
        wall_min, p10, p25, median, cpu = map(float, row.groups())
        assert 0 < wall_min <= p10 <= p25 <= median and cpu > 0
    assert re.search(r"^both \(hardened - neither\)\s+[+-]\d+\.\d+ ms wall p10", proc.stdout, re.M), proc.stdout


def test_sandbox_cost_rejects_bad_counts():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/sandbox_cost.py"), "--steps", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--steps" in proc.stderr and "Traceback" not in proc.stderr
