"""The escape corpus (see cases.py): every hostile RUN fails in every isolation mode,
and the host is the same after the build as before.

* ``chroot`` and ``userns``: no case may get through.
* ``inplace`` (Kaniko mode), ``container-chroot`` (the chroot isolation's fallback) and
  ``container-rootless`` (the rootless image as uid 1000, userns isolation), all in a jail
  set up like an unprivileged container without a seccomp profile: no case may get
  further than the same attempt made straight in that container, and nothing of the
  executor's credentials (its environment, its memory, /kaniko/.docker) may be readable
  where a mount namespace can be made.

Root only: chroot, namespaces, the static probe compiled with gcc.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.escape.cases import CASE_NAMES, SURVIVOR_NAMES
from tests.escape.conftest import CONTAINER_MODES, MODES
from tests.escape.host import tracer_of

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="chroot and namespaces need root"),
]

# In a container, whatever the container allows: the executor's environment, command line and
# memory are never readable by a step (it is not dumpable and blanks its command line), and
# its files under /kaniko are not wherever a mount namespace can be made for the step.
EXECUTOR_CASES = ("proc_secret", "init_environ", "ptrace_init")
PREFIX_CASES = ("kaniko_credentials",)


def _verdicts(result, case: str) -> list[tuple[str, str]]:
    lines = result.cases.get(case)
    assert lines, (f"[{result.mode}] case {case} printed no PROBE line (build exit {result.returncode}):\n"
                   f"{result.output[-3000:]}")
    return lines


def _assert_blocked(result, case: str) -> None:
    lines = _verdicts(result, case)
    bad = [f"{v} {d}" for v, d in lines if v != "blocked"]
    assert not bad, f"[{result.mode}] {case}: {'; '.join(bad)}"


def _namespaces_possible(baseline) -> bool:
    return any(v == "ESCAPED" for v, _ in baseline.cases.get("unshare_userns_mount", []))


@pytest.mark.parametrize("case", CASE_NAMES)
@pytest.mark.parametrize("mode", MODES)
def test_attempt_fails(corpus, mode: str, case: str) -> None:
    result = corpus.result(mode)
    if mode not in CONTAINER_MODES:
        _assert_blocked(result, case)
        return
    baseline = corpus.baseline(mode)
    if case in EXECUTOR_CASES or (case in PREFIX_CASES and _namespaces_possible(baseline)):
        _assert_blocked(result, case)
        return
    allowed = {d for v, d in _verdicts(baseline, case) if v == "ESCAPED"}
    if not allowed:
        _assert_blocked(result, case)
        return
    # The container itself lets this through: the step may get no further than the container.
    got = {d for v, d in _verdicts(result, case) if v != "blocked"}
    assert got <= allowed, \
        f"[{mode}] {case}: {sorted(got - allowed)} beyond what the container allows {sorted(allowed)}"


@pytest.mark.parametrize("mode", MODES)
def test_build_completes(corpus, mode: str) -> None:
    result = corpus.result(mode)
    assert result.returncode == 0, result.output[-4000:]
    assert set(result.cases) >= set(CASE_NAMES), sorted(set(CASE_NAMES) - set(result.cases))


@pytest.mark.parametrize("mode", MODES)
def test_host_unchanged(corpus, mode: str) -> None:
    for which in ("corpus", "survivors"):
        result = corpus.result(mode, which)
        assert not result.host_changes, f"[{mode} {which}] host changed: {result.host_changes}"
    assert corpus.marker.read_text() == "host side\n"


@pytest.mark.parametrize("mode", MODES)
def test_host_process_untouched(corpus, host_sleeper, mode: str) -> None:
    corpus.result(mode)
    assert host_sleeper.poll() is None, "the host process was killed"
    assert tracer_of(host_sleeper.pid) == 0, "the host process is being traced"


@pytest.mark.parametrize("name", SURVIVOR_NAMES)
@pytest.mark.parametrize("mode", MODES)
def test_no_process_survives_its_step(corpus, mode: str, name: str) -> None:
    result = corpus.result(mode, "survivors")
    assert result.returncode == 0, result.output[-4000:]
    _assert_blocked(result, f"survivor_{name}")
    assert f"/raced-{name}" not in result.image_paths
    assert not result.survivors_on_host, f"left running on the host: {result.survivors_on_host}"
    assert not re.search(r"^SURVIVOR-PS ", result.output, re.M), result.output[-2000:]
