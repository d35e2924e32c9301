"""Real Kaniko command lines from public CI configs (tests/data/kaniko_cmdlines/corpus.yaml),
run unchanged through the executor against a small context and the loopback registry.

Shell lines run through bash with ``/kaniko/executor`` (or ``/usr/bin/executor``)
defined as a shell function calling this checkout's executor, so the text of the
line is what the CI job's shell would run. Each line runs twice: first with the
function only recording its arguments (to learn which context and Dockerfile the
line names, so the test can put a small project there), then for real. Pushed
destinations are checked with skopeo; --tar-path and --digest-file outputs on disk.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from pybuildless.cli.build import command
from pybuildless.cli.kaniko_args import normalise

ROOT = Path(__file__).resolve().parent.parent
CORPUS = yaml.safe_load((ROOT / "tests/data/kaniko_cmdlines/corpus.yaml").read_text())
APPLICABLE = [e for e in CORPUS if e.get("applicable", True)]
PROGRAMS = ("/kaniko/executor", "/usr/bin/executor")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")]


def test_corpus_size():
    assert len(CORPUS) >= 45 and len(APPLICABLE) >= 40
    assert all(e.get("source") for e in CORPUS)
    assert all(e.get("why") for e in CORPUS if not e.get("applicable", True))


def _fill(text: str, roles: dict[str, str]) -> str:
    for role, value in roles.items():
        text = text.replace(role, value)
    return text


def _shell_script(entry: dict, body: str) -> str:
    # bash accepts a function named like a path; the line itself stays as written.
    functions = "".join(f"function {p} {{ {body}; }}\n" for p in PROGRAMS)
    line = entry["line"]
    for template, value in (entry.get("interpolate") or {}).items():
        line = line.replace(template, value)
    return functions + line


def _run(entry: dict, roles: dict[str, str], project: Path, body: str, env: dict, stdin: bytes | None):
    if entry["kind"] == "shell":
        script = _fill(_shell_script(entry, body), {"@image": roles["@image"], "@registry": roles["@registry"],
                                                    "@context": roles["@context"]})
        argv = ["bash", "-c", script, "ci-job", *[_fill(p, roles) for p in entry.get("positional", [])]]
    else:
        args = []
        for arg in entry["args"]:
            for template, value in (entry.get("interpolate") or {}).items():
                arg = arg.replace(template, value)
            args.append(_fill(arg, roles))
        argv = ["bash", "-c", body, "executor", *args]
    return subprocess.run(argv, cwd=project, env=env, input=stdin, capture_output=True, timeout=300)


def _record_args(entry, roles, project, env) -> list[str]:
    dump = project.parent / "args.bin"
    proc = _run(entry, roles, project, f"printf '%s\\0' \"$@\" > {dump}", env, b"")
    assert dump.exists(), proc.stderr.decode()
    raw = dump.read_bytes().split(b"\0")[:-1]
    dump.unlink()
    return [a.decode() for a in raw]


def _layout(args: list[str], project: Path, tmp_path: Path, busybox: str) -> dict:
    """Put a small project where the line's --context and --dockerfile point."""
    params = command.make_context("executor", list(normalise(command, args).args)).params
    spec = params["context"]
    context = project if spec == "tar://stdin" else Path(spec.removeprefix("dir://"))
    context = context if context.is_absolute() else project / context
    context = Path(os.path.normpath(context))
    assert tmp_path in context.parents or context == tmp_path, f"context {context} is outside the test's temp dir"
    # the layer store goes to --cache-dir: a line naming a directory of this machine's root must be mapped
    cache_dir = params.get("cache_dir")
    if cache_dir and os.path.isabs(cache_dir):
        assert tmp_path in Path(cache_dir).parents, f"--cache-dir {cache_dir} is outside the test's temp dir"
    context.mkdir(parents=True, exist_ok=True)
    (context / "hello.txt").write_text("hello from the corpus\n")
    dockerfile = Path(params["dockerfile"])
    dockerfile = dockerfile if dockerfile.is_absolute() else context / dockerfile
    assert tmp_path in dockerfile.parents, f"Dockerfile {dockerfile} is outside the test's temp dir"
    dockerfile.parent.mkdir(parents=True, exist_ok=True)
    text = f"FROM {busybox} AS base\nRUN echo built > /built.txt\nCOPY hello.txt /hello.txt\n"
    if params["target"]:
        text += f"FROM base AS {params['target']}\nRUN echo target > /target.txt\n"
    dockerfile.write_text(text)
    return {**params, "context_dir": context}


def _context_tar(context: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for path in sorted(context.rglob("*")):
            t.add(path, arcname=str(path.relative_to(context)), recursive=False)
    return gzip.compress(buf.getvalue())


@pytest.mark.parametrize("entry", APPLICABLE, ids=[e["id"] for e in APPLICABLE])
def test_real_command_line_builds(entry, tmp_path, registry, busybox_image):
    project = tmp_path / "project"
    project.mkdir()
    roles = {"@context": str(project), "@image": f"{registry.host}/corpus/{entry['id'].lower()}",
             "@registry": registry.host, "@tmp": str(tmp_path)}
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT),
           "DOCKER_CONFIG": str(tmp_path / "docker"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "TMPDIR": str(tmp_path)}
    env.update({k: _fill(str(v), roles) for k, v in (entry.get("env") or {}).items()})
    if entry.get("offline"):
        env["KANIKO_NO_PUSH"] = "true"  # Kaniko's own switch: the line stays as it is
    for d in entry.get("mkdir", []):
        (project / d).mkdir(parents=True)
    args = _record_args(entry, roles, project, env)
    params = _layout(args, project, tmp_path, busybox_image)
    stdin = _context_tar(params["context_dir"]) if entry.get("stdin") else b""
    executor = f'{sys.executable} -c "from pybuildless.cli import executor_main; executor_main()" "$@"'
    before = set(os.listdir("/"))
    proc = _run(entry, roles, project, executor, env, stdin)
    out = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, f"args: {args}\n{out}"
    assert set(os.listdir("/")) == before  # nothing written outside the temp dirs
    pushing = not params["no_push"] and not entry.get("offline")
    for dest in params["destination"] if pushing else ():
        inspected = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{dest}"],
                                   capture_output=True, text=True, timeout=60)
        assert inspected.returncode == 0, f"{dest} was not pushed: {inspected.stderr}\n{out}"
        assert json.loads(inspected.stdout)["Digest"].startswith("sha256:")
    if params["tar_path"]:
        tar_path = Path(params["tar_path"])
        tar_path = tar_path if tar_path.is_absolute() else project / tar_path
        with tarfile.open(tar_path) as t:
            assert "manifest.json" in t.getnames()
    if params["digest_file"]:
        assert (project / params["digest_file"]).read_text().startswith("sha256:")
