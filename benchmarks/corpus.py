#!/usr/bin/env python3
"""The speed corpus: pybuildless against ``buildah bud --isolation chroot --layers``, cold and warm.

Cases (Dockerfiles in ``benchmarks/corpus/``):
  small-app     a small application on busybox
  debian-files  a Debian-like base (this machine's dash/bash/coreutils and their libraries); a RUN
                writes 6000 files, the next deletes some (base files too) and rewrites 500
  python-venv   the Debian-like base plus this machine's Debian python3.11; ``python3 -m venv /venv``
                (with pip, from the Debian wheels) in a RUN
  big-context   a context of 5000 files / 100 MB COPY'd onto busybox

Both builders end with the image in the same loopback registry: pybuildless ``build -d`` (with
``--cache --cache-copy-layers`` and a cache repository in that registry) and ``buildah bud`` then
``buildah push``. Cold: empty cache repository / empty buildah storage (the base is pulled). Warm:
the unchanged Dockerfile again (pybuildless from the registry cache, buildah from its storage).

Prints per case the wall times, the ratios pybuildless/buildah (against bud+push and against bud
alone) and pybuildless's peak RSS, then the medians, and checks the warm builds: under 2 s, no base
extraction, and the same image as the cold build (layers and runtime config). Needs root, docker-registry, skopeo, buildah.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "corpus"
sys.path.insert(0, str(ROOT))

from tests.fixtures.images import make_busybox_rootfs, push_layout, write_oci_layout  # noqa: E402
from tests.fixtures.registry import start_registry  # noqa: E402
from tests.jail import make_debian_like_rootfs  # noqa: E402

PYTHON = Path("/usr/bin/python3.11")  # Debian's: its ensurepip finds pip in /usr/share/python-wheels


# --- measuring a process -----------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    argv: tuple[str, ...]
    seconds: float
    returncode: int
    stdout: str
    stderr: str
    peak_rss_kb: int  # VmHWM of the process itself (polled)
    tree_rss_kb: int  # ru_maxrss from wait4: the largest of it and its reaped descendants

    def check(self) -> "Run":
        if self.returncode != 0:
            raise SystemExit(f"{' '.join(self.argv[:6])}... failed ({self.returncode}):\n{self.stderr[-3000:]}")
        return self


def _vm_hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


PYCACHE = Path(tempfile.gettempdir()) / "pybuildless-bench-pycache"


def pybuildless_env() -> dict[str, str]:
    """The environment for timed pybuildless runs: with bytecode caches, as an installed package
    has them (kept outside the source tree), even where PYTHONDONTWRITEBYTECODE is set."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


def precompile() -> None:
    """Compile pybuildless once before timing, so no timed run pays for it."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "pybuildless")], env=pybuildless_env(),
                   check=True, stdout=subprocess.DEVNULL)


def run_measured(argv: list[str], *, cwd: Path | None = None, poll: float = 0.01,
                 env: dict[str, str] | None = None) -> Run:
    """Run ``argv``, with its wall time and peak RSS (the high-water mark only rises, so the
    last poll before exit is within ``poll`` seconds of the true peak)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        peak = 0
        # wait4 reaps, and a reaped (or zombie) process has no VmHWM left: poll /proc until the
        # process is a zombie, then reap it with its rusage.
        while True:
            try:
                with open(f"/proc/{proc.pid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                state = "Z"
            if state == "Z":
                break
            peak = max(peak, _vm_hwm_kb(proc.pid))
            time.sleep(poll)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(tuple(argv), seconds, proc.returncode, out.read().decode(errors="replace"),
                   err.read().decode(errors="replace"), peak, usage.ru_maxrss)


# --- bases ---------------------------------------------------------------------------------------

def _copy_libraries(binaries: list[Path], root: Path) -> None:
    """Copy the shared libraries ``ldd`` lists for ``binaries`` into the rootfs's libdir."""
    libdir = root / "usr" / "lib" / "x86_64-linux-gnu"
    for binary in binaries:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if "=>" in parts and len(parts) > 2 and parts[2].startswith("/"):
                dest = libdir / Path(parts[2]).name
                if not dest.exists():
                    shutil.copy2(os.path.realpath(parts[2]), dest)


def make_python_rootfs(root: Path) -> Path:
    """The Debian-like base plus this machine's Debian python3.11, its standard library (without
    caches), the libraries of its extension modules and the wheels ensurepip installs."""
    make_debian_like_rootfs(root)
    usr = root / "usr"
    shutil.copy2(PYTHON, usr / "bin" / PYTHON.name)
    (usr / "bin" / "python3").symlink_to(PYTHON.name)
    stdlib = Path("/usr/lib") / PYTHON.name
    shutil.copytree(stdlib, usr / "lib" / PYTHON.name, symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "test", "idlelib", "tkinter", "turtledemo"))
    wheels = Path("/usr/share/python-wheels")
    shutil.copytree(wheels, usr / "share" / "python-wheels")
    _copy_libraries([PYTHON, *sorted((stdlib / "lib-dynload").glob("*.so"))], root)
    return root


def make_context_files(ctx: Path, files: int = 5000, total_bytes: int = 100 * 1024 * 1024) -> None:
    """``files`` files totalling ``total_bytes`` under 50 directories: seeded, so each run has the
    same content; half the files compress well (text-like), half do not (random)."""
    rng = random.Random(1234)
    each = total_bytes // files
    text = (b"the quick brown fox jumps over the lazy dog " * (each // 44 + 1))[:each]
    for i in range(files):
        d = ctx / "src" / f"pkg{i % 50:02d}"
        d.mkdir(parents=True, exist_ok=True)
        data = rng.randbytes(each) if i % 2 else text
        (d / f"file{i:05d}.dat").write_bytes(data)


@dataclass(frozen=True)
class Case:
    name: str
    base: str  # "busybox" | "debian" | "python"
    generate: bool = False  # context files made by make_context_files


CASES = (
    Case("small-app", "busybox"),
    Case("debian-files", "debian"),
    Case("python-venv", "python"),
    Case("big-context", "busybox", generate=True),
)


def push_bases(work: Path, server, needed: set[str]) -> dict[str, str]:
    makers = {"busybox": make_busybox_rootfs, "debian": make_debian_like_rootfs, "python": make_python_rootfs}
    refs = {}
    for name in sorted(needed):
        rootfs = makers[name](work / "bases" / name / "rootfs")
        layout = write_oci_layout(rootfs, work / "bases" / name / "layout")
        refs[name] = push_layout(layout, server, f"bench/base-{name}:latest")
    return refs


# --- the two builders ------------------------------------------------------------------------------

def pybuildless_build(ctx: Path, base: str, dest: str, cache_repo: str, work_dir: Path,
                      extra: tuple[str, ...] = ()) -> Run:
    """``pybuildless build`` of ``ctx`` pushed to ``dest``, with the registry layer cache.
    ``PYBUILDLESS_PROFILE=DIR`` runs it under cProfile, one profile file per build in DIR."""
    work_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable]
    profile_dir = os.environ.get("PYBUILDLESS_PROFILE")
    if profile_dir:
        Path(profile_dir).mkdir(parents=True, exist_ok=True)
        name = work_dir.name  # "<case>-<attempt>-cold|warm"
        argv += ["-m", "cProfile", "-o", str(Path(profile_dir) / f"{name}.prof")]
    argv += ["-m", "pybuildless", "build", "-c", str(ctx), "-f", str(ctx / "Dockerfile"),
             "--build-arg", f"BASE={base}", "-d", dest, "--cache", "--cache-copy-layers",
             "--cache-repo", cache_repo, "--work-dir", str(work_dir), *extra]
    return run_measured(argv, cwd=ROOT, env=pybuildless_env()).check()


@dataclass(frozen=True)
class Buildah:
    storage: Path
    driver: str

    def _global(self) -> list[str]:
        return ["buildah", "--root", str(self.storage / "root"), "--runroot", str(self.storage / "run"),
                "--storage-driver", self.driver]

    def bud(self, ctx: Path, base: str, tag: str) -> Run:
        return run_measured([*self._global(), "bud", "--isolation", "chroot", "--layers", "--tls-verify=false",
                             "--build-arg", f"BASE={base}", "-f", str(ctx / "Dockerfile"), "-t", tag,
                             str(ctx)]).check()

    def push(self, tag: str, dest: str) -> Run:
        return run_measured([*self._global(), "push", "--tls-verify=false", tag, f"docker://{dest}"]).check()

    def remove(self) -> None:
        """Delete the images (unmounting overlay layers) before the storage directory goes."""
        subprocess.run([*self._global(), "rmi", "--all", "--force"], capture_output=True)
        subprocess.run(["umount", "-R", str(self.storage / "root" / "overlay")], capture_output=True)


def buildah_driver(scratch: Path) -> str:
    """overlay when this kernel and filesystem allow it (buildah's fast path), else vfs."""
    probe = Buildah(scratch, "overlay")
    ctx = scratch / "ctx"
    ctx.mkdir(parents=True)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY f /f\n")
    (ctx / "f").write_text("probe\n")
    ok = subprocess.run([*probe._global(), "bud", "--isolation", "chroot", "-t", "probe", str(ctx)],
                        capture_output=True).returncode == 0
    probe.remove()
    return "overlay" if ok else "vfs"


def image_differences(cold_ref: str, warm_ref: str) -> tuple[str, ...]:
    """A cached rebuild must give the same image: same layers, same runtime config (only the
    creation times may differ). Returns what differs."""
    configs = []
    for ref in (cold_ref, warm_ref):
        out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--config", "--raw", f"docker://{ref}"],
                             capture_output=True, text=True, check=True).stdout
        configs.append(json.loads(out))
    cold, warm = configs
    found = []
    if cold["rootfs"]["diff_ids"] != warm["rootfs"]["diff_ids"]:
        found.append("layers (rootfs.diff_ids)")
    for key in sorted(set(cold.get("config", {})) | set(warm.get("config", {}))):
        if cold.get("config", {}).get(key) != warm.get("config", {}).get(key):
            found.append(f"config.{key}: {cold.get('config', {}).get(key)!r} -> {warm.get('config', {}).get(key)!r}")
    return tuple(found)


# --- one case -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Figures:
    case: str
    pyb_cold: Run
    pyb_warm: Run
    bah_cold_bud: Run
    bah_cold_push: Run
    bah_warm_bud: Run
    bah_warm_push: Run

    warm_differences: tuple[str, ...] = ()  # how the warm image differs from the cold one

    def warm_extracted(self) -> list[str]:
        return [line for line in self.pyb_warm.stderr.splitlines() if "extracted" in line]


def run_case(case: Case, work: Path, server, bases: dict[str, str], driver: str, attempt: int) -> Figures:
    ctx = work / "ctx" / case.name
    if not ctx.exists():
        shutil.copytree(CORPUS / case.name, ctx)
        if case.generate:
            make_context_files(ctx)
    base = bases[case.base]
    tag = f"{case.name}-{attempt}"
    cache_repo = server.ref(f"bench/cache-{tag}")  # a fresh, empty cache for the cold build
    pyb_dest = server.ref(f"bench/pybuildless:{tag}")
    bah_dest = server.ref(f"bench/buildah:{tag}")
    local = f"localhost/bench-{tag}"
    buildah = Buildah(work / "buildah" / tag, driver)
    try:
        pyb_cold = pybuildless_build(ctx, base, f"{pyb_dest}-cold", cache_repo, work / "pyb" / f"{tag}-cold")
        bah_cold_bud = buildah.bud(ctx, base, local)
        bah_cold_push = buildah.push(local, bah_dest)
        pyb_warm = pybuildless_build(ctx, base, f"{pyb_dest}-warm", cache_repo, work / "pyb" / f"{tag}-warm")
        differences = image_differences(f"{pyb_dest}-cold", f"{pyb_dest}-warm")
        bah_warm_bud = buildah.bud(ctx, base, local)
        bah_warm_push = buildah.push(local, bah_dest)
    finally:
        buildah.remove()
        shutil.rmtree(work / "buildah" / tag, ignore_errors=True)
        shutil.rmtree(work / "pyb", ignore_errors=True)
    return Figures(case.name, pyb_cold, pyb_warm, bah_cold_bud, bah_cold_push, bah_warm_bud, bah_warm_push,
                   differences)


def best(figures: list[Figures]) -> Figures:
    """Of repeated attempts, the fastest of each measurement (noise on a shared machine only adds)."""
    def pick(attr: str) -> Run:
        return min((getattr(f, attr) for f in figures), key=lambda r: r.seconds)
    differences = tuple(sorted({d for f in figures for d in f.warm_differences}))
    return Figures(figures[0].case, *(pick(a) for a in ("pyb_cold", "pyb_warm", "bah_cold_bud", "bah_cold_push",
                                                         "bah_warm_bud", "bah_warm_push")), differences)


# --- report ----------------------------------------------------------------------------------------

def report(results: list[Figures], driver: str) -> bool:
    """Print the table and the acceptance checks; True when all of them hold."""
    print(f"\nbuildah storage driver: {driver}; times in seconds; ratio = pybuildless / buildah "
          f"(bud+push, and bud alone); RSS = pybuildless process peak (VmHWM)")
    header = (f"{'case':<13} {'mode':<5} {'pybuildless':>11} {'buildah bud':>11} {'+push':>7} "
              f"{'ratio':>6} {'ratio(bud)':>10} {'RSS MB':>7} {'tree MB':>7}")
    print(header)
    print("-" * len(header))
    ratios: dict[str, list[float]] = {"cold": [], "warm": []}
    bud_ratios: dict[str, list[float]] = {"cold": [], "warm": []}
    ok = True
    for f in results:
        for mode, pyb, bud, push in (("cold", f.pyb_cold, f.bah_cold_bud, f.bah_cold_push),
                                     ("warm", f.pyb_warm, f.bah_warm_bud, f.bah_warm_push)):
            total = bud.seconds + push.seconds
            ratio, bud_ratio = pyb.seconds / total, pyb.seconds / bud.seconds
            ratios[mode].append(ratio)
            bud_ratios[mode].append(bud_ratio)
            print(f"{f.case:<13} {mode:<5} {pyb.seconds:>11.2f} {bud.seconds:>11.2f} {push.seconds:>7.2f} "
                  f"{ratio:>6.2f} {bud_ratio:>10.2f} {pyb.peak_rss_kb / 1024:>7.1f} {pyb.tree_rss_kb / 1024:>7.1f}")
    print()
    for mode in ("cold", "warm"):
        print(f"median ratio {mode}: {statistics.median(ratios[mode]):.2f} (bud+push), "
              f"{statistics.median(bud_ratios[mode]):.2f} (bud alone)")
    cold_median = statistics.median(ratios["cold"])
    print(f"[{'ok' if cold_median <= 1.0 else 'FAIL'}] cold median ratio {cold_median:.2f} <= 1.0")
    ok &= cold_median <= 1.0
    for f in results:
        extracted = f.warm_extracted()
        fast = f.pyb_warm.seconds < 2.0
        ok &= fast and not extracted
        print(f"[{'ok' if fast and not extracted else 'FAIL'}] {f.case}: warm {f.pyb_warm.seconds:.2f}s < 2s, "
              f"base extraction: {'; '.join(extracted) if extracted else 'none'}")
    for f in results:
        same = not f.warm_differences
        ok &= same
        print(f"[{'ok' if same else 'FAIL'}] {f.case}: warm image = cold image"
              + ("" if same else f" - differs in {'; '.join(f.warm_differences)}"))
    peak = max(r.peak_rss_kb for f in results for r in (f.pyb_cold, f.pyb_warm)) / 1024
    print(f"peak RSS of pybuildless over the corpus: {peak:.1f} MB")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1, help="attempts per case; the fastest of each is kept")
    parser.add_argument("--case", action="append", choices=[c.name for c in CASES], help="only these cases")
    parser.add_argument("--keep", type=Path, help="work directory to use and keep (default: a temp dir)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("corpus.py needs root (chroot RUN steps for both builders)")
    cases = [c for c in CASES if not args.case or c.name in args.case]
    with tempfile.TemporaryDirectory(prefix="pybuildless-corpus-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        server, stop = start_registry(work / "registry")
        try:
            precompile()
            driver = buildah_driver(work / "probe")
            bases = push_bases(work, server, {c.base for c in cases})
            results = []
            for case in cases:
                attempts = []
                for attempt in range(args.repeat):
                    attempts.append(run_case(case, work, server, bases, driver, attempt))
                    f = attempts[-1]
                    print(f"{case.name} #{attempt}: pybuildless cold {f.pyb_cold.seconds:.2f}s warm "
                          f"{f.pyb_warm.seconds:.2f}s; buildah cold {f.bah_cold_bud.seconds:.2f}+"
                          f"{f.bah_cold_push.seconds:.2f}s warm {f.bah_warm_bud.seconds:.2f}+"
                          f"{f.bah_warm_push.seconds:.2f}s", flush=True)
                results.append(best(attempts))
        finally:
            stop()
    return 0 if report(results, driver) else 1


if __name__ == "__main__":
    sys.exit(main())
