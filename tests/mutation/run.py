"""Mutation testing of the rule modules (``make mutation``; not part of ``make test`` or CI).

Each group of ``[tool.mutmut.groups]`` in pyproject.toml (modules to mutate, tests that should
kill their mutants) runs with mutmut in its own fresh copy of the committed HEAD, never in the
working tree, so edits in progress neither disturb nor get into the run. The report gives, per
group, killed / survived / timeout / no-test counts, the score

    score = (killed + timeout) / (total - justified equivalents)

and every surviving mutant with its diff. Equivalent mutants are justified in docs/mutation.md,
one per line as ``- `NAME` (`mutated line`): why``; a justification whose mutated line no longer
matches the mutant's diff (the module changed and mutmut renumbered) does not count.

A group with ``forked_children = true`` (code that runs only in forked children, such as the
sandbox's mount setup) runs with the plugin tests/mutation/childcalls.py, which records those
children's calls so that mutmut attributes them to the test that forked them.

Usage: python3 tests/mutation/run.py [GROUP ...] [--jobs N] [--keep]
       python3 tests/mutation/run.py GROUP --retest COPY   (survivors of a kept copy, with the current tests)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
JUSTIFIED = REPO / "docs" / "mutation.md"
THRESHOLD = 85.0
_ENTRY = re.compile(r"^- `(?P<name>pybuildless\.[^`]+__mutmut_\d+)` \(`(?P<line>[^`]*)`\):\s*(?P<why>\S.*)$")


@dataclass
class GroupResult:
    name: str
    counts: dict[str, int] = field(default_factory=dict)
    survivors: list[tuple[str, str]] = field(default_factory=list)  # (mutant, diff)
    equivalent: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def score(self) -> float | None:
        total = sum(self.counts.values()) - len(self.equivalent)
        detected = self.counts.get("killed", 0) + self.counts.get("timeout", 0)
        return 100.0 * detected / total if total > 0 else None


def justifications() -> dict[str, str]:
    """mutant name -> the mutated line its justification was written for."""
    found = {}
    if JUSTIFIED.exists():
        for line in JUSTIFIED.read_text().splitlines():
            m = _ENTRY.match(line.strip())
            if m:
                found[m["name"]] = m["line"].strip()
    return found


def config() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mutmut"]


def fresh_copy(dest: Path) -> None:
    """The committed HEAD (not the working tree) unpacked into ``dest``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def _toml_list(values: list[str]) -> str:
    return json.dumps(values)  # a JSON array of plain strings is a TOML array


def pytest_args(base: dict, group: dict) -> list[str]:
    """The pytest options of a group's run: the common ones, plus the child-call recorder
    (tests/mutation/childcalls.py) for a group whose code runs in forked children."""
    args = list(base.get("pytest_add_cli_args", []))
    if group.get("forked_children"):
        args += ["-p", "tests.mutation.childcalls"]
    return args


def write_group_config(copy: Path, base: dict, group: dict) -> None:
    """Replace the copy's [tool.mutmut] tables by one for this group."""
    text = (copy / "pyproject.toml").read_text()
    kept, skipping = [], False
    for line in text.splitlines():
        if line.startswith("["):
            skipping = line.strip().startswith("[tool.mutmut")
        if not skipping:
            kept.append(line)
    section = [
        "[tool.mutmut]",
        f"source_paths = {_toml_list(base['source_paths'])}",
        f"only_mutate = {_toml_list(group['mutate'])}",
        f"pytest_add_cli_args = {_toml_list(pytest_args(base, group))}",
        f"pytest_add_cli_args_test_selection = {_toml_list(group['tests'])}",
        "use_git_change_detection = false",
    ]
    if "timeout_multiplier" in group:
        # mutmut's wall-clock limit per mutant is (its tests' time + 1 s) x this; its default (15)
        # makes every mutant that deadlocks a thread pool wait minutes
        section.append(f"timeout_multiplier = {float(group['timeout_multiplier'])}")
    (copy / "pyproject.toml").write_text("\n".join(kept + [""] + section) + "\n")


def mutmut(copy: Path, *args: str, log: Path | None = None, confined: bool = False) -> subprocess.CompletedProcess:
    """``mutmut ARGS`` in the copy; ``confined``: with every filesystem read-only but the copy."""
    argv = [sys.executable, "-m", "mutmut", *args]
    env = dict(os.environ)
    if confined:
        # A mutant of the extraction or removal code may write or delete anywhere (a dir_fd
        # dropped, a path no longer joined under its root) and the tests run as root: run them
        # in a private mount namespace where only the copy (and the temp dir inside it) is writable.
        argv = ["unshare", "--mount", "--propagation", "private", sys.executable, __file__, "--confine", str(copy),
                "--", *argv]
        (copy / "tmp").mkdir(exist_ok=True)
        env["TMPDIR"] = str(copy / "tmp")
        # and a home of its own: tests/conftest.py fails a session whose run saw ~/.cache/pybuildless
        # change, which other builds on a shared machine do at any time (a false kill, or a failed
        # clean run)
        (copy / "home").mkdir(exist_ok=True)
        env["HOME"] = str(copy / "home")
    out = open(log, "w") if log else subprocess.PIPE
    try:
        return subprocess.run(argv, cwd=copy, stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
    finally:
        if log:
            out.close()


# kernel views and devices stay as they are (writing /dev/null is not writing the filesystem)
_LEFT_ALONE = ("/proc", "/sys", "/dev", "/mnt/sandboxing")


def confine_and_exec(writable: Path, argv: list[str]) -> None:
    """Inside a fresh private mount namespace: make every mount read-only except ``writable``
    (bind-mounted onto itself first so it is a mount of its own), then exec ``argv``."""
    if os.readlink("/proc/self/ns/mnt") == os.readlink(f"/proc/{os.getppid()}/ns/mnt"):
        sys.exit("--confine runs only in a mount namespace of its own (under unshare --mount)")
    subprocess.run(["mount", "--bind", str(writable), str(writable)], check=True)
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point != str(writable) and not any(point == p or point.startswith(p + "/") for p in _LEFT_ALONE):
                points.append(point)
    for point in sorted(set(points), key=len):
        proc = subprocess.run(["mount", "-o", "remount,bind,ro", point], capture_output=True, text=True)
        if proc.returncode != 0 and not os.path.ismount(point):
            continue  # a mount point shadowed by a later mount
        if proc.returncode != 0:
            sys.exit(f"cannot make {point} read-only for the mutation run: {proc.stderr.strip()}")
    probe = Path("/") / f".mutation-write-probe-{os.getpid()}"
    try:
        probe.touch()
    except OSError:
        pass
    else:
        probe.unlink()
        sys.exit("/ is still writable: refusing to run mutants")
    os.chdir(os.getcwd())  # the old cwd is on the read-only mount below the bind: look the path up again
    os.execvp(argv[0], argv)


def run_group(name: str, base: dict, group: dict, jobs: int, workdir: Path, known: dict[str, str]) -> GroupResult:
    result = GroupResult(name)
    copy = workdir / name
    copy.mkdir()
    fresh_copy(copy)
    write_group_config(copy, base, group)
    print(f"== {name}: mutating {', '.join(group['mutate'])}", flush=True)
    proc = mutmut(copy, "run", "--max-children", str(jobs), log=workdir / f"{name}.log", confined=True)
    if proc.returncode != 0:
        result.error = f"mutmut run exited {proc.returncode} (log: {workdir / f'{name}.log'})"
    return collect(result, copy, known)


def retest(name: str, group: dict, copy: Path, jobs: int, known: dict[str, str]) -> GroupResult:
    """Test a kept copy's survivors again with the working tree's tests of the group (tests added
    after the run, the modules' source unchanged): the group's test files are copied into the copy
    (and into mutmut's tree in it), then ``mutmut run`` is given the names of the survivors not
    justified as equivalent."""
    for test in group["tests"]:
        for dest in (copy / test, copy / "mutants" / test):
            if dest.parent.is_dir():
                shutil.copy2(REPO / test, dest)
    before = collect(GroupResult(name), copy, known)
    survivors = [mutant for mutant, diff in before.survivors if diff.startswith("[survived]")]
    print(f"== {name}: testing {len(survivors)} survivors of {copy} again", flush=True)
    result = GroupResult(name)
    if survivors:
        log = copy.parent / f"{name}.retest.log"
        proc = mutmut(copy, "run", "--max-children", str(jobs), *survivors, log=log, confined=True)
        if proc.returncode != 0:
            result.error = f"mutmut run exited {proc.returncode} (log: {log})"
    return collect(result, copy, known)


def collect(result: GroupResult, copy: Path, known: dict[str, str]) -> GroupResult:
    """Counts and survivors of the mutmut run in ``copy``."""
    listing = mutmut(copy, "results", "--all", "true").stdout
    for line in listing.splitlines():
        mutant, sep, status = line.strip().rpartition(": ")
        if not sep or "__mutmut_" not in mutant:
            continue
        result.counts[status] = result.counts.get(status, 0) + 1
        if status in ("killed", "timeout", "not checked"):  # not checked: a run stopped before it
            continue
        diff = mutmut(copy, "show", mutant).stdout
        added = [d[1:].strip() for d in diff.splitlines() if d.startswith("+") and not d.startswith("+++")]
        if mutant in known and status == "survived":
            if any(known[mutant] == a for a in added):
                result.equivalent.append(mutant)
                continue
            result.stale.append(mutant)
        result.survivors.append((mutant, f"[{status}]\n{diff.strip()}"))
    return result


def report(results: list[GroupResult]) -> bool:
    ok = True
    print("\n== surviving mutants (not justified in docs/mutation.md)")
    for r in results:
        for mutant, diff in r.survivors:
            print(f"\n-- {mutant}" + (" (justification is stale: the mutated line differs)" if mutant in r.stale else ""))
            print(diff)
    print("\n== mutation score  (killed+timeout) / (total - justified equivalents)")
    print(f"{'group':<14}{'total':>6}{'killed':>7}{'timeout':>8}{'survived':>9}{'no tests':>9}{'equiv':>6}{'score':>8}")
    for r in results:
        c = r.counts
        score = r.score
        text = "n/a" if score is None else f"{score:.1f}%"
        print(f"{r.name:<14}{sum(c.values()):>6}{c.get('killed', 0):>7}{c.get('timeout', 0):>8}"
              f"{c.get('survived', 0):>9}{c.get('no tests', 0):>9}{len(r.equivalent):>6}{text:>8}")
        if r.error:
            print(f"   {r.name}: {r.error}")
        ok &= not r.error and score is not None and score >= THRESHOLD
    print(f"\nthreshold: {THRESHOLD:.0f}% per group -> {'met' if ok else 'NOT met'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--confine"] and "--" in argv:
        confine_and_exec(Path(argv[1]), argv[argv.index("--") + 1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("groups", nargs="*", help="groups to run (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once (mutmut --max-children; the machine is shared)")
    parser.add_argument("--keep", action="store_true", help="keep the copies (to inspect with mutmut browse)")
    parser.add_argument("--retest", metavar="COPY", type=Path,
                        help="test the survivors of a kept copy (DIR/GROUP of an earlier --keep run) again with the "
                             "tests of the working tree, instead of a new run")
    args = parser.parse_args(argv)
    base = config()
    groups = base["groups"]
    unknown = [g for g in args.groups if g not in groups]
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)}; known: {', '.join(groups)}")
    known = justifications()
    if args.retest:
        if len(args.groups) != 1:
            parser.error("--retest takes the one group the copy was made for")
        return 0 if report([retest(args.groups[0], groups[args.groups[0]], args.retest, args.jobs, known)]) else 1
    workdir = Path(tempfile.mkdtemp(prefix="pybuildless-mutation-"))
    try:
        results = [run_group(g, base, groups[g], args.jobs, workdir, known) for g in (args.groups or list(groups))]
        return 0 if report(results) else 1
    finally:
        if args.keep:
            print(f"copies kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
