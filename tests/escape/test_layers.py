"""Which protection stops which escape: every probe of the corpus run straight (no
executor) in a throwaway container that has exactly one layer of the RUN sandbox:

* ``open``: every capability, no masks, no seccomp — the corpus must get through here
  (each case is a live attack), unless this kernel lacks what it targets or refuses it
  to anyone;
* ``capabilities``: the step's capability set (Docker's default minus CAP_MKNOD);
* ``masks``: Docker's masked and read-only /proc paths and a read-only /sys;
* ``seccomp``: the step's seccomp program (pybuildless.sandbox.seccomp, Docker's profile).

All four also have private mount and pid namespaces and pivot_root, as every RUN does.
The results fill the "blocked by" column of docs/security.md; the test asserts that each
case escapes the open container and that at least one layer stops it on its own.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.escape.cases import CASE_NAMES, CASES
from tests.escape.host import run_in_container
from tests.fixtures.images import make_busybox_rootfs

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="chroot and namespaces need root"),
]

LAYERS = ("open", "capabilities", "masks", "seccomp")
# Writes a host-global value (the same one back) when nothing stops it: not run in the open container.
_WRITES = {"core_pattern_write"}
# Not a matter of one container layer: the builder's own processes and credentials (its init
# is machinery, not the step: non-dumpable, more capabilities), and what every RUN gets from
# its namespaces whatever the layers (pivot_root, a pid namespace, its own /dev).
_NOT_LAYERED = {"proc_secret", "init_environ", "kaniko_credentials", "ptrace_init", "ptrace_host", "double_chroot",
                "host_devices", "leaked_fds", "proc_roots"}


def _kernel_refuses(case: str, detail: str) -> bool:
    """The target is absent from this kernel (checked on the host, independently of the probe),
    or the kernel refuses it to anyone (ETXTBSY: a program being run cannot be written)."""
    if "ENOSYS" in detail or "ETXTBSY" in detail:
        return True
    absent = {"kcore": "/proc/kcore", "sysrq_trigger": "/proc/sysrq-trigger",
              "sysrq_trigger_shell": "/proc/sysrq-trigger"}
    return case in absent and not Path(absent[case]).exists()


@pytest.fixture(scope="session")
def layer_results(corpus, tmp_path_factory):
    from pybuildless.sandbox import _linux
    from pybuildless.sandbox.seccomp import docker_default_program

    work = tmp_path_factory.mktemp("escape-layers")
    program = work / "seccomp.bpf"
    program.write_bytes(docker_default_program(capabilities=_linux.RUN_CAPABILITIES))
    all_caps = tuple(range(_linux.last_capability() + 1))
    configs = {"open": dict(caps=all_caps, masks=False),
               "capabilities": dict(caps=tuple(sorted(_linux.RUN_CAPABILITIES)), masks=False),
               "masks": dict(caps=all_caps, masks=True),
               "seccomp": dict(caps=all_caps, masks=False, seccomp=program)}
    script = "\n".join(f"( {c.run} )" for c in CASES if c.name not in _WRITES)
    results = {}
    for layer, config in configs.items():
        jail = make_busybox_rootfs(work / layer)
        for d in ("proc", "dev"):
            (jail / d).mkdir(exist_ok=True)
        corpus.copy_probe_files(jail)
        run = run_in_container(jail, corpus.tools.enter, [
            "/bin/sh", "-c", 'HOST_MARKER="$1" HOST_PID="$2" sh -c "$3"', "sh", str(corpus.marker),
            str(corpus.sleeper_pid), script], **config)
        results[layer] = corpus.record(f"layer-{layer}", run.returncode, run.stdout + run.stderr)
    return results


@pytest.mark.parametrize("case", [c for c in CASE_NAMES if c not in _WRITES | _NOT_LAYERED])
def test_case_is_live_and_some_layer_stops_it(layer_results, case: str) -> None:
    open_lines = layer_results["open"].cases.get(case)
    assert open_lines, layer_results["open"].output[-3000:]
    if not any(v == "ESCAPED" for v, _ in open_lines):
        detail = "; ".join(d for _, d in open_lines)
        assert _kernel_refuses(case, detail), f"{case} does not get through even with no protection: {detail}"
        return
    stopping = [layer for layer in LAYERS[1:]
                if all(v == "blocked" for v, _ in layer_results[layer].cases.get(case, [("?", "")]))]
    assert stopping, f"{case}: no single layer stops it: " + "; ".join(
        f"{layer}: {layer_results[layer].cases.get(case)}" for layer in LAYERS[1:])


# What every RUN gets from its namespaces and its own /dev, whatever the layers: live against a
# plain chroot (the classic build sandbox) with the host's /proc, /dev and pid namespace and an
# inherited descriptor of a host directory.
_STRUCTURAL = ("double_chroot", "leaked_fds", "proc_roots", "ptrace_host", "host_devices")
_PLAIN_CHROOT = r"""
set -e
J=$0
mount -t proc proc "$J/proc"
mount --rbind /dev "$J/dev"
exec 3< /tmp
exec chroot "$J" "$@"
"""


@pytest.fixture(scope="session")
def plain_chroot_results(corpus, tmp_path_factory):
    import subprocess

    jail = make_busybox_rootfs(tmp_path_factory.mktemp("escape-plain") / "root")
    for d in ("proc", "dev"):
        (jail / d).mkdir(exist_ok=True)
    corpus.copy_probe_files(jail)
    script = "\n".join(f"( {c.run} )" for c in CASES if c.name in _STRUCTURAL)
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", _PLAIN_CHROOT, str(jail),
         "/bin/sh", "-c", 'HOST_MARKER="$1" HOST_PID="$2" sh -c "$3"', "sh", str(corpus.marker),
         str(corpus.sleeper_pid), script], capture_output=True, text=True, timeout=120)
    return corpus.record("plain-chroot", proc.returncode, proc.stdout + proc.stderr)


@pytest.mark.parametrize("case", _STRUCTURAL)
def test_structural_case_is_live_against_a_plain_chroot(plain_chroot_results, host_sleeper, case: str) -> None:
    lines = plain_chroot_results.cases.get(case)
    assert lines, plain_chroot_results.output[-3000:]
    assert any(v == "ESCAPED" for v, _ in lines), f"{case} does not get out of a plain chroot: {lines}"
    assert host_sleeper.poll() is None
