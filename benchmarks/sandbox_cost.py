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

Each sample is a fresh process (so every variant pays the same interpreter and page-cache
state): it makes the sandbox, runs a few warm-up steps, then times N steps and reports the
mean per step. Samples of the variants alternate, in a rotated order each round. Printed:
min and median ms per step per variant, the spread of the samples (noise), and the cost of
the hardening as the difference of medians against ``neither`` and ``before``.

    sudo python benchmarks/sandbox_cost.py                 # 60 steps x 7 samples per variant
    sudo python benchmarks/sandbox_cost.py --steps 20 --samples 3 --no-before
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
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


def worker(root: Path, steps: int, overrides: dict) -> float:
    """Mean seconds per step; imports whichever pybuildless PYTHONPATH names."""
    from pybuildless.fs.users import ResolvedUser
    from pybuildless.sandbox import chroot as chroot_module
    from pybuildless.sandbox.chroot import ChrootSandbox

    if overrides:
        unknown = set(overrides) - {f.name for f in dataclasses.fields(chroot_module.ChildSpec)}
        if unknown:
            raise SystemExit(f"this code has no ChildSpec field {', '.join(sorted(unknown))}")
        real_run_child = chroot_module.run_child

        def run_child(spec, sink):
            return real_run_child(dataclasses.replace(spec, **overrides), sink)

        chroot_module.run_child = run_child
    user = ResolvedUser(0, 0, (), "/root", "root")
    out = bytearray()
    with ChrootSandbox(root) as sandbox:
        def step() -> None:
            code = sandbox.run(["/bin/true"], env={"PATH": "/bin"}, cwd="/", user=user, stdout=out.extend)
            if code != 0:
                raise SystemExit(f"RUN /bin/true exited {code}: {bytes(out).decode(errors='replace')}")

        for _ in range(WARMUP):
            step()
        started = time.perf_counter()
        for _ in range(steps):
            step()
        return (time.perf_counter() - started) / steps


def sample(code_root: Path, root: Path, steps: int, overrides: dict) -> float:
    env = {**os.environ, "PYTHONPATH": str(code_root), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(root), "--steps", str(steps),
                           "--overrides", json.dumps(overrides)], env=env, capture_output=True, text=True,
                          timeout=600, cwd=str(code_root))
    if proc.returncode != 0:
        raise SystemExit(f"sample failed ({code_root}, {overrides}):\n{proc.stderr.strip()}")
    return float(proc.stdout.split()[-1])


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
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 1 or args.samples < 1:
        parser.error("--steps and --samples must be at least 1")
    if args.worker:
        print(worker(args.worker, args.steps, json.loads(args.overrides)))
        return
    if os.geteuid() != 0:
        parser.error("needs root (the chroot isolation)")

    with tempfile.TemporaryDirectory(prefix="sandbox-cost-") as tmp:
        work = Path(tmp)
        root = make_root(work / "root")
        runs: dict[str, tuple[Path, dict]] = {name: (REPO, o) for name, o in VARIANTS.items()}
        worktree = None
        try:
            if not args.no_before:
                rev = args.before or hardening_base()
                short = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", rev], capture_output=True,
                                       text=True, check=True).stdout.strip()
                worktree = work / "before"
                subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), rev],
                               check=True, capture_output=True)
                runs[f"before@{short}"] = (worktree, {})
            names = list(runs)
            results: dict[str, list[float]] = {n: [] for n in names}
            for round_ in range(args.samples):
                shift = round_ % len(names)
                for name in names[shift:] + names[:shift]:
                    code_root, overrides = runs[name]
                    results[name].append(sample(code_root, root, args.steps, overrides) * 1000)
        finally:
            if worktree is not None:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)],
                               capture_output=True)

    print(f"per-RUN cost, ms per /bin/true step ({args.steps} steps x {args.samples} samples per variant, "
          f"{WARMUP} warm-up steps, alternating order)")
    print(f"{'variant':<18}{'min':>8}{'median':>9}{'spread':>9}")
    medians = {}
    for name, values in results.items():
        med = statistics.median(values)
        medians[name] = med
        spread = (max(values) - min(values)) / med * 100
        print(f"{name:<18}{min(values):>8.2f}{med:>9.2f}{spread:>8.0f}%")
    noise = max(statistics.median(abs(v - statistics.median(vals)) for v in vals) for vals in results.values())
    print(f"noise (largest median absolute deviation of a variant's samples): {noise:.2f} ms")
    hardened = medians["hardened"]
    for name in ("no-seccomp", "no-masks"):
        print(f"cost of {'seccomp' if name == 'no-seccomp' else 'masks':<12}{hardened - medians[name]:>+8.2f} ms "
              "(hardened - " + name + ")")
    print(f"cost of both{'':<8}{hardened - medians['neither']:>+8.2f} ms (hardened - neither)")
    before = [n for n in medians if n.startswith("before@")]
    if before:
        cost = hardened - medians[before[0]]
        print(f"hardening cost{'':<6}{cost:>+8.2f} ms (hardened - {before[0]}; target < {TARGET_MS:.0f} ms)")
        print(f"verdict: {'within' if cost < TARGET_MS else 'OVER'} the {TARGET_MS:.0f} ms target")


if __name__ == "__main__":
    main()
