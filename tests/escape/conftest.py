"""Fixtures of the escape corpus: the probe built at test time, a host process to
attack, and one corpus build per isolation mode (run once, then every case reads
its own line of the result)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.buildkit import executor, write_context
from tests.escape.cases import (
    SURVIVOR_SLEEP, corpus_dockerfile, docker_archive_paths, parse, survivors_dockerfile,
)
from tests.escape.host import HostState, processes_with, run_in_container
from tests.fixtures.images import make_busybox_rootfs
from tests.jail import assemble_executor_fs, copy_jail

HERE = Path(__file__).resolve().parent
# The container modes run the executor in a jail set up like an unprivileged container
# (host.run_in_container): in-place (Kaniko mode); the chroot isolation, which falls back to
# a plain chroot there (no CAP_SYS_ADMIN, so no namespaces for the step); and the rootless
# image as uid 1000 under no_new_privs (userns isolation with the single id map, the
# container's masked /proc bound read-only because the kernel refuses a fresh one there).
MODES = ("chroot", "userns", "inplace", "container-chroot", "container-rootless")
CONTAINER_MODES = ("inplace", "container-chroot", "container-rootless")
BUILD_USER = "1000:1000"


@dataclass(frozen=True)
class Tools:
    probe: Path
    enter: Path


@pytest.fixture(scope="session")
def escape_tools(tmp_path_factory: pytest.TempPathFactory) -> Tools:
    out = tmp_path_factory.mktemp("escape-tools")
    built = {}
    for name in ("probe", "enter"):
        subprocess.run(["gcc", "-static", "-O1", "-Wall", "-o", str(out / name), str(HERE / f"{name}.c")],
                       check=True, capture_output=True, timeout=120)
        built[name] = out / name
    return Tools(**built)


@pytest.fixture(scope="session")
def host_sleeper():
    """A host process a RUN step tries to ptrace."""
    proc = subprocess.Popen(["sleep", "1800"])
    yield proc
    proc.kill()
    proc.wait()


@dataclass
class BuildResult:
    mode: str
    returncode: int
    output: str
    cases: dict[str, list[tuple[str, str]]]
    host_changes: list[str]
    image_paths: set[str] = field(default_factory=set)
    survivors_on_host: list[str] = field(default_factory=list)


@dataclass
class Corpus:
    """Runs each mode's builds once, on first use."""
    tools: Tools
    base: str
    work: Path
    sleeper_pid: int
    secret: str = field(default_factory=lambda: "s3cr3t-" + secrets.token_hex(12))
    survivor_mark: str = field(default_factory=lambda: "escape-survivor-" + secrets.token_hex(6))
    _results: dict[tuple[str, str], BuildResult] = field(default_factory=dict)
    _executor_fs: Path | None = None

    @property
    def marker(self) -> Path:
        """A host file outside every root a step is given."""
        path = self.work / "host-marker"
        if not path.exists():
            path.write_text("host side\n")
        return path

    def _context(self, ctx: Path, dockerfile: str) -> Path:
        write_context(ctx, {"Dockerfile": dockerfile, "filler": os.urandom(4 << 20)})
        return self.copy_probe_files(ctx)

    def copy_probe_files(self, directory: Path) -> Path:
        """The probe and the secret in two halves (the proc_secret case looks for the whole)."""
        half = len(self.secret) // 2
        (directory / "secret-halves").write_text(f"{self.secret[:half]} {self.secret[half:]}\n")
        shutil.copy2(self.tools.probe, directory / "probe")
        return directory

    def record(self, name: str, returncode: int, output: str) -> BuildResult:
        """Keep a run that is not a build (for ESCAPE_REPORT)."""
        result = BuildResult(name, returncode, output, parse(output), [])
        self._results[(name, "run")] = result
        return result

    def _args(self) -> list[str]:
        return ["--no-push", "--build-arg", f"HOST_MARKER={self.marker}", "--build-arg",
                f"HOST_PID={self.sleeper_pid}", "--label", f"escape.secret={self.secret}"]

    def result(self, mode: str, which: str = "corpus") -> BuildResult:
        key = (mode, which)
        if key not in self._results:
            self._results[key] = self._build(mode, which)
        return self._results[key]

    def _build(self, mode: str, which: str) -> BuildResult:
        dockerfile = corpus_dockerfile(self.base) if which == "corpus" \
            else survivors_dockerfile(self.base, self.survivor_mark)
        work = self.work / f"{mode}-{which}"
        work.mkdir()
        self.marker  # noqa: B018 - created before the first snapshot
        before = HostState.read(self.work)
        if mode in CONTAINER_MODES:
            code, output, tarball = self._build_in_container(work, dockerfile, mode)
        else:
            ctx = self._context(work / "ctx", dockerfile)
            tarball = work / "image.tar"
            proc = executor("--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile"), "--destination",
                            f"escape/{which}:{mode}", "--tar-path", str(tarball), "--isolation", mode,
                            *self._args(), cwd=work, env={"ESCAPE_SECRET": self.secret}, check=False)
            code, output = proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace")
        survivors = processes_with(self.survivor_mark) + processes_with(SURVIVOR_SLEEP)
        after = HostState.read(self.work)
        paths = docker_archive_paths(tarball) if tarball.exists() else set()
        return BuildResult(mode, code, output, parse(output), before.differences(after), paths, survivors)

    def executor_fs(self) -> Path:
        if self._executor_fs is None:
            self._executor_fs = assemble_executor_fs(self.work / "executor-fs" / "jail")
        return self._executor_fs

    def inplace_jail(self, name: str) -> Path:
        jail = copy_jail(self.executor_fs(), self.work / name)
        # the registry credentials Kaniko mode keeps in /kaniko/.docker
        (jail / "kaniko/.docker").mkdir(parents=True, exist_ok=True)
        (jail / "kaniko/.docker/config.json").write_text(
            '{"auths": {"registry.example": {"auth": "%s"}}}\n' % self.secret)
        return jail

    def _build_in_container(self, work: Path, dockerfile: str, mode: str) -> tuple[int, str, Path]:
        rootless = mode == "container-rootless"
        jail = self.rootless_jail(f"{work.name}-jail") if rootless else self.inplace_jail(f"{work.name}-jail")
        self._context(jail / "workspace", dockerfile)
        isolation = ["--isolation", "chroot"] if mode == "container-chroot" else []
        run = run_in_container(jail, self.tools.enter, [
            "/kaniko/executor", "--context", "dir:///workspace", "--destination", "escape/inplace:1",
            "--tar-path", "/workspace/image.tar", *isolation, *self._args()], env={"ESCAPE_SECRET": self.secret},
            user=BUILD_USER if rootless else None, stage="rootless" if rootless else "executor")
        return run.returncode, run.stdout + run.stderr, jail / "workspace/image.tar"

    def rootless_jail(self, name: str) -> Path:
        """The rootless image's filesystem (tests/test_examples.py), credentials in DOCKER_CONFIG."""
        from tests.test_examples import make_rootless_jail

        jail = make_rootless_jail(self.work / name)
        (jail / "kaniko/.docker").mkdir(parents=True, exist_ok=True)
        (jail / "kaniko/.docker/config.json").write_text(
            '{"auths": {"registry.example": {"auth": "%s"}}}\n' % self.secret)
        os.chown(jail / "workspace", 1000, 1000)
        return jail

    def baseline(self, mode: str) -> BuildResult:
        """Every case run straight in the container ``mode`` runs the executor in (no executor,
        no RUN; as the same user): what the container itself allows."""
        rootless = mode == "container-rootless"
        key = ("container-rootless" if rootless else "inplace", "baseline")
        if key not in self._results:
            jail = self.rootless_jail("baseline-rootless-jail") if rootless else self.inplace_jail("baseline-jail")
            make_busybox_rootfs(jail)
            self._context(jail, "")
            from tests.escape.cases import CASES
            script = "\n".join(f"( {c.run} )" for c in CASES)
            run = run_in_container(jail, self.tools.enter, [
                "/bin/sh", "-c", 'HOST_MARKER="$1" HOST_PID="$2" sh -c "$3"', "sh", str(self.marker),
                str(self.sleeper_pid), script], user=BUILD_USER if rootless else None)
            self._results[key] = BuildResult("inplace", run.returncode, run.stdout + run.stderr,
                                             parse(run.stdout + run.stderr), [])
        return self._results[key]


@pytest.fixture(scope="session")
def corpus(escape_tools: Tools, busybox_image: str, host_sleeper, tmp_path_factory):
    """``ESCAPE_REPORT=FILE`` writes every verdict seen (mode -> case -> lines) as JSON at
    the end, for the results table of docs/security.md."""
    found = Corpus(escape_tools, busybox_image, tmp_path_factory.mktemp("escape"), host_sleeper.pid)
    yield found
    report = os.environ.get("ESCAPE_REPORT")
    if report:
        data = {f"{mode}/{which}": {"exit": r.returncode, "host_changes": r.host_changes, "cases": r.cases,
                                    "survivors_on_host": r.survivors_on_host}
                for (mode, which), r in found._results.items()}
        Path(report).write_text(json.dumps(data, indent=1, sort_keys=True))
