"""The corpus fails when the sandbox is weakened: the same build in chroot isolation with the
seccomp filter and the /proc masks switched off (a sitecustomize on the executor's
PYTHONPATH replaces them in every ChildSpec) lets the cases those layers stop get through,
and even then the host is unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.buildkit import ROOT, executor, write_context
from tests.escape.cases import corpus_dockerfile, parse
from tests.escape.host import HostState

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="chroot and namespaces need root"),
]

_WEAKEN = """
import dataclasses
from pybuildless.sandbox import chroot
_run_child = chroot.run_child
chroot.run_child = lambda spec, sink: _run_child(
    dataclasses.replace(spec, seccomp_program=None, protect_proc=False), sink)
"""
# Stopped by the masks or by seccomp alone (docs/security.md): these must now get through.
EXPECTED = {"core_pattern", "core_pattern_write", "proc_sys_vm", "proc_sys_kernel", "masked_paths", "keyctl",
            "add_key", "unshare_userns_mount", "unshare_shell"}


def test_corpus_catches_a_sandbox_without_seccomp_and_masks(corpus, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_WEAKEN)
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": corpus_dockerfile(corpus.base)})
    corpus.copy_probe_files(ctx)
    before = HostState.read(tmp_path)
    proc = executor("--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile"), "--no-push", "--destination",
                    "escape/weakened:1", "--isolation", "chroot", "--build-arg", f"HOST_MARKER={corpus.marker}",
                    "--build-arg", f"HOST_PID={corpus.sleeper_pid}", cwd=tmp_path,
                    env={"PYTHONPATH": f"{site}{os.pathsep}{ROOT}"}, check=False)
    output = (proc.stdout + proc.stderr).decode(errors="replace")
    # every attempt is harmless even when it gets through (core_pattern is written with its own value)
    assert not before.differences(HostState.read(tmp_path))
    assert proc.returncode == 0, output[-3000:]
    escaped = {case for case, lines in parse(output).items() if any(v != "blocked" for v, _ in lines)}
    assert EXPECTED <= escaped, f"not detected: {sorted(EXPECTED - escaped)} (got through: {sorted(escaped)})"
