"""Per-RUN cost of the sandbox hardening: N trivial steps (``/bin/true``) through
``pybuildless.sandbox.ChrootSandbox``, with and without each hardening feature.

Variants, all on the same busybox root:

* ``hardened``   — the code as it is (masked/read-only /proc and /sys, seccomp filter, init
                   that hides the builder);
* ``no-seccomp`` — the same without the seccomp filter (``ChildSpec.seccomp_program=None``);
* ``no-masks``   — the same without the /proc and /sys protection (``ChildSpec.protect_proc=False``);
* ``neither``    — without both;
* ``before@REV`` — the sandbox before the hardening (default: the parent of the first commit
                   that added ``protect_proc``), run from a temporary ``git worktree``.

Each sample is a fresh process: the current code's four variants in one process, their
steps interleaved one by one (so load from other work on the machine hits them alike), and
the pre-hardening code in another; the two kinds of process alternate. Every step's wall
time and CPU time (the builder plus every process of the step, from getrusage) are kept.
Printed per variant: wall min / 10th / 25th percentile / median and CPU mean (tick-sampled,
so a mean); the noise (how far the two halves of one variant's steps disagree); and each
feature's cost as a difference in wall p10, wall p25 and CPU mean. On a loaded machine the
low percentiles (the steps that were not kept waiting) and the CPU time are the steady
figures; the median mostly measures the load. The script runs at nice -20 (unless
``--keep-priority``) so that other work on a shared machine barely delays the steps.

    sudo python benchmarks/sandbox_cost.py                 # 7 processes x 60 steps per variant
    sudo python benchmarks/sandbox_cost.py --steps 20 --samples 3 --no-before
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"hardened": {}, "no-seccomp": {"seccomp_program": None}, "no-masks": {"protect_proc": False},
            "neither": {"seccomp_program": None, "protect_proc": False}}
WARMUP = 5
TARGET_MS = 5.0


def make_root(root: Path) -> Path:
    """A minimal root: static busybox with ``true`` and ``sh``."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(busybox, root / "bin/busybox")
    for applet in ("true", "sh"):
        (root / "bin" / applet).symlink_to("busybox")
    for d in ("etc", "tmp", "proc", "dev", "sys"):
        (root / d).mkdir()
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    return root


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def worker(root: Path, steps: int, variants: dict[str, dict]) -> dict[str, dict[str, list[float]]]:
    """Per-step wall and CPU seconds (builder + every process of the step) of each variant,
    the variants' steps interleaved one by one; imports whichever pybuildless PYTHONPATH names."""
    from pybuildless.fs.users import ResolvedUser
    from pybuildless.sandbox import chroot as chroot_module
    from pybuildless.sandbox.chroot import ChrootSandbox

    fields = {f.name for f in dataclasses.fields(chroot_module.ChildSpec)}
    unknown = {k for o in variants.values() for k in o} - fields
    if unknown:
        raise SystemExit(f"this code has no ChildSpec field {', '.join(sorted(unknown))}")
    real_run_child = chroot_module.run_child
    current: dict = {}

    def run_child(spec, sink):
        return real_run_child(dataclasses.replace(spec, **current) if current else spec, sink)

    chroot_module.run_child = run_child
    user = ResolvedUser(0, 0, (), "/root", "root")
    out = bytearray()
    times = {name: {"wall": [], "cpu": []} for name in variants}
    with ChrootSandbox(root) as sandbox:
        def step(name: str) -> tuple[float, float]:
            current.clear()
            current.update(variants[name])
            cpu, wall = _cpu(), time.perf_counter()
            code = sandbox.run(["/bin/true"], env={"PATH": "/bin"}, cwd="/", user=user, stdout=out.extend).exit_code
            wall, cpu = time.perf_counter() - wall, _cpu() - cpu
            if code != 0:
                raise SystemExit(f"RUN /bin/true exited {code}: {bytes(out).decode(errors='replace')}")
            return wall, cpu

        names = list(variants)
        for _ in range(WARMUP):
            for name in names:
                step(name)
        for i in range(steps):
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                wall, cpu = step(name)
                times[name]["wall"].append(wall)
                times[name]["cpu"].append(cpu)
    return times


def sample(code_root: Path, root: Path, steps: int, variants: dict[str, dict]) -> dict[str, dict[str, list[float]]]:
    env = {**os.environ, "PYTHONPATH": str(code_root), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(root), "--steps", str(steps),
                           "--variants", json.dumps(variants)], env=env, capture_output=True, text=True,
                          timeout=900, cwd=str(code_root))
    if proc.returncode != 0:
        raise SystemExit(f"sample failed ({code_root}):\n{proc.stderr.strip()}")
    return json.loads(proc.stdout.splitlines()[-1])


def hardening_base() -> str:
    """The parent of the first commit that added ChildSpec.protect_proc."""
    first = subprocess.run(["git", "-C", str(REPO), "log", "--format=%H", "--reverse", "-S", "protect_proc",
                            "--", "pybuildless/sandbox/process.py"], capture_output=True, text=True, check=True)
    commits = first.stdout.split()
    if not commits:
        raise SystemExit("no commit adds protect_proc; pass --before REV or --no-before")
    return commits[0] + "^"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="timed steps per sample (default 60)")
    parser.add_argument("--samples", type=int, default=7, help="samples per variant (default 7)")
    parser.add_argument("--before", metavar="REV", help="the pre-hardening commit (default: found in git log)")
    parser.add_argument("--no-before", action="store_true", help="skip the pre-hardening code")
    parser.add_argument("--keep-priority", action="store_true", help="do not run at nice -20")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--variants", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 1 or args.samples < 1:
        parser.error("--steps and --samples must be at least 1")
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, json.loads(args.variants))))
        return
    if os.geteuid() != 0:
        parser.error("needs root (the chroot isolation)")
    if not args.keep_priority:
        # Highest CPU weight (inherited by the samples and their steps): other work on a
        # shared machine then barely delays a step, and wall times mean something.
        os.setpriority(os.PRIO_PROCESS, 0, -20)

    with tempfile.TemporaryDirectory(prefix="sandbox-cost-") as tmp:
        work = Path(tmp)
        root = make_root(work / "root")
        workers: list[tuple[Path, dict[str, dict]]] = [(REPO, VARIANTS)]
        worktree = None
        try:
            if not args.no_before:
                rev = args.before or hardening_base()
                short = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", rev], capture_output=True,
                                       text=True, check=True).stdout.strip()
                worktree = work / "before"
                subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), rev],
                               check=True, capture_output=True)
                workers.append((worktree, {f"before@{short}": {}}))
            wall: dict[str, list[float]] = {n: [] for _, vs in workers for n in vs}
            cpu: dict[str, list[float]] = {n: [] for n in wall}
            for round_ in range(args.samples):
                order = workers if round_ % 2 == 0 else workers[::-1]
                for code_root, variants in order:
                    for name, times in sample(code_root, root, args.steps, variants).items():
                        wall[name] += [t * 1000 for t in times["wall"]]
                        cpu[name] += [t * 1000 for t in times["cpu"]]
        finally:
            if worktree is not None:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)],
                               capture_output=True)

    print(f"per-RUN cost in ms of a /bin/true step: {args.samples} processes x {args.steps} steps per variant, "
          f"{WARMUP} warm-up steps each; the variants of one process interleaved step by step, processes "
          f"alternating; nice {os.getpriority(os.PRIO_PROCESS, 0)}")
    print(f"{'variant':<18}{'wall min':>9}{'wall p10':>9}{'wall p25':>9}{'wall med':>9}{'cpu mean':>9}")
    stats = {}
    for name in wall:
        w, c = sorted(wall[name]), cpu[name]
        stats[name] = (w[0], w[len(w) // 10], w[len(w) // 4], statistics.median(w), statistics.fmean(c))
        print(f"{name:<18}" + "".join(f"{v:>9.2f}" for v in stats[name]))
    # noise: how far apart two halves of the same variant's steps land (first half vs second half)
    noise = max(abs(statistics.median(v[: len(v) // 2]) - statistics.median(v[len(v) // 2:])) for v in wall.values())
    print(f"noise: medians of the first and second half of a variant's steps differ by up to {noise:.2f} ms "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus)")

    def cost(a: str, b: str, label: str) -> float:
        p10, p25, by_cpu = (stats[a][i] - stats[b][i] for i in (1, 2, 4))
        print(f"{label:<44}{p10:>+7.2f} ms wall p10 {p25:>+7.2f} ms wall p25 {by_cpu:>+7.2f} ms cpu")
        return p10, by_cpu

    cost("hardened", "no-seccomp", "seccomp filter (hardened - no-seccomp)")
    cost("hardened", "no-masks", "/proc and /sys masks (hardened - no-masks)")
    cost("hardened", "neither", "both (hardened - neither)")
    before = [n for n in stats if n.startswith("before@")]
    if before:
        by_wall, by_cpu = cost("hardened", before[0], f"all hardening (hardened - {before[0]})")
        print(f"verdict against the {TARGET_MS:.0f} ms per step target: "
              f"cpu {'within' if by_cpu < TARGET_MS else 'OVER'}, "
              f"wall p10 {'within' if by_wall < TARGET_MS else 'OVER'}")


if __name__ == "__main__":
    main()
