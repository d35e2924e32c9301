"""A build's start-up stays light: what a build loads is what it uses.

Every process pays for the modules it imports (a tenth of a second or more on a loaded machine),
so a build that never runs RUN, never reaches a registry and writes no layer must not load the
HTTP stack, tar and its compressors, the sandboxes and their seccomp tables, the git and S3
context clients, multi-platform support or the layer cache. Each case runs the real command line
in a fresh interpreter and reads ``sys.modules`` afterwards; the control cases show the check sees
those modules once a build does need them. No timings here: figures belong in benchmarks/startup.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Modules a build loads only when it needs them (a top-level name stands for its whole package).
HEAVY = (
    "requests", "urllib3", "charset_normalizer", "idna", "http.client", "ssl",  # a registry is reached
    "tarfile", "zstandard", "isal", "gzip", "decimal",  # a layer is read or written (shutil loads bz2 and lzma)
    "dulwich", "boto3", "botocore",  # git:// and s3:// contexts
    "yaml", "jsonschema",  # never at run time
    "pybuildless.sandbox.chroot", "pybuildless.sandbox.seccomp", "pybuildless.sandbox.seccomp_profile",
    "pybuildless.sandbox.syscalls_table", "pybuildless.sandbox.process",  # a RUN runs
    "pybuildless.registry.transport", "pybuildless.registry.client",
    "pybuildless.fs.extract", "pybuildless.fs.compress", "pybuildless.image.tarball",
    "pybuildless.builder.gitcontext", "pybuildless.builder.s3context", "pybuildless.builder.archives",
    "pybuildless.builder.multiplatform", "pybuildless.builder.binfmt", "pybuildless.cache.store",
)

# The instruction kinds other than FROM and ARG, one module per family: loaded only for a
# Dockerfile that has one of them (dockerfile/instructions.py), as are the steps' modules.
INSTRUCTION_FAMILIES = {
    "RUN": "pybuildless.dockerfile.instructions_run",
    "COPY": "pybuildless.dockerfile.instructions_copy",
    "ENV": "pybuildless.dockerfile.instructions_pairs",
    "USER": "pybuildless.dockerfile.instructions_single",
    "CMD": "pybuildless.dockerfile.instructions_command",
    "EXPOSE": "pybuildless.dockerfile.instructions_declare",
}

# Runs the command line (``executor`` or ``pybuildless``) with the given arguments in this
# interpreter, then prints the names of the loaded modules as the last line.
LOADED_AFTER = """
import json, sys
from pybuildless import cli
entry = cli.executor_main if sys.argv[1] == "executor" else cli.main
code = 0
try:
    entry(sys.argv[2:])
except SystemExit as e:
    code = e.code or 0
# a stand-in (pybuildless/cli/deferred.py) is not the module: only a real one counts as loaded
from pybuildless.cli.deferred import _StandIn
modules = sorted(name for name, module in sys.modules.items() if not isinstance(module, _StandIn))
print(json.dumps({"code": code, "modules": modules,
                  "stand_ins": sorted(name for name, module in sys.modules.items() if isinstance(module, _StandIn))}))
"""

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")


def _run(tmp_path: Path, *argv: str) -> tuple[int, set[str], str]:
    code, modules, _, stderr = _run_with_stand_ins(tmp_path, *argv)
    return code, modules, stderr


def _run_with_stand_ins(tmp_path: Path, *argv: str) -> tuple[int, set[str], set[str], str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"), "PYTHONPATH": str(ROOT)}
    env.pop("PYBUILDLESS_ISOLATION", None)
    proc = subprocess.run([sys.executable, "-c", LOADED_AFTER, *argv], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["code"], set(result["modules"]), set(result["stand_ins"]), proc.stderr


def _heavy(loaded: set[str]) -> list[str]:
    return sorted(name for name in HEAVY if name in loaded)


def _context(tmp_path: Path, dockerfile: str) -> Path:
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    return context


def test_executor_help_loads_no_heavy_module(tmp_path: Path) -> None:
    code, loaded, _ = _run(tmp_path, "executor", "--help")
    assert code == 0
    assert "click" in loaded  # the check sees what was imported
    assert not _heavy(loaded)
    assert "pybuildless.builder.executor" not in loaded
    assert "pybuildless.dockerfile.parser" not in loaded


@needs_root
def test_a_build_without_run_registry_or_layer_loads_no_heavy_module(tmp_path: Path) -> None:
    context = _context(tmp_path, "FROM scratch\nARG VERSION=1\nENV APP=/srv/app VERSION=$VERSION\n"
                                 "LABEL org.example.name=startup\nEXPOSE 8080\nUSER 1000\nCMD [\"/srv/app\"]\n")
    code, loaded, stderr = _run(tmp_path, "pybuildless", "build", "-c", str(context), "--no-push")
    assert code == 0, stderr
    assert "built sha256:" in stderr
    # what the build did need was loaded and seen
    assert {"pybuildless.dockerfile.parser", "pybuildless.builder.executor",
            "pybuildless.builder.commands.metadata"} <= loaded
    assert not _heavy(loaded), stderr
    # the instruction families of ENV/LABEL, USER, CMD and EXPOSE, not those of RUN and COPY/ADD
    families = {keyword for keyword, module in INSTRUCTION_FAMILIES.items() if module in loaded}
    assert families == {"ENV", "USER", "CMD", "EXPOSE"}, stderr
    assert not {"pybuildless.builder.commands.run", "pybuildless.builder.commands.files"} & loaded


@needs_root
def test_a_copy_build_loads_only_the_copy_instructions(tmp_path: Path) -> None:
    context = _context(tmp_path, "FROM scratch\nCOPY Dockerfile /Dockerfile\n")
    code, loaded, stderr = _run(tmp_path, "executor", "-c", str(context), "--no-push")
    assert code == 0, stderr
    assert "built sha256:" in stderr
    families = {keyword for keyword, module in INSTRUCTION_FAMILIES.items() if module in loaded}
    assert families == {"COPY"}, stderr
    assert "pybuildless.builder.commands.files" in loaded
    assert not {"pybuildless.builder.commands.run", "pybuildless.builder.commands.metadata",
                "pybuildless.sandbox.chroot", "pybuildless.fs.users"} & loaded  # users: only for --chown


@needs_root
def test_executor_with_an_oci_layout_output_loads_no_registry_client(tmp_path: Path) -> None:
    context = _context(tmp_path, "FROM scratch\nENV A=1\nCMD [\"/a\"]\n")
    code, loaded, stderr = _run(tmp_path, "executor", "-c", str(context), "--oci-layout-path", str(tmp_path / "out"))
    assert code == 0, stderr
    assert (tmp_path / "out" / "index.json").is_file()
    assert "pybuildless.image.layout" in loaded
    assert not {"requests", "urllib3", "pybuildless.registry.transport", "tarfile",
                "pybuildless.sandbox.seccomp"} & loaded


@needs_root
def test_control_a_run_step_loads_the_sandbox_and_a_tar_context_loads_tar(tmp_path: Path) -> None:
    # RUN in an empty root: no shell to run, so the step fails, but only after its sandbox was opened
    context = _context(tmp_path, "FROM scratch\nRUN [\"/bin/true\"]\n")
    code, loaded, stderr = _run(tmp_path, "pybuildless", "build", "-c", str(context), "--no-push")
    assert code != 0
    assert {"pybuildless.sandbox.chroot", "pybuildless.sandbox.seccomp"} <= loaded, stderr
    assert INSTRUCTION_FAMILIES["RUN"] in loaded

    (tmp_path / "ctx.tar").write_bytes(b"")
    code, loaded, stderr = _run(tmp_path, "executor", "-c", f"tar://{tmp_path / 'ctx.tar'}", "--no-push")
    assert code != 0  # an empty tar stream has no Dockerfile
    assert "tarfile" in loaded, stderr


def test_benchmarks_launch_pybuildless_as_the_executor_image_does(tmp_path: Path) -> None:
    # benchmarks/launch.py: -I -S and an explicit sys.path, so no site-packages .pth hook runs
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from launch import isolated_argv
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    report = ("import atexit, json, sys; atexit.register(lambda: print('REPORT', json.dumps([sys.flags.isolated, "
              "sys.flags.no_site, 'site' in sys.modules, sys.path, sys.modules['pybuildless'].__file__]), "
              "file=sys.stderr))")
    proc = subprocess.run(isolated_argv(ROOT, ["build", "--help"], prelude=report), cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL, env={"PATH": os.environ.get("PATH", "")})
    assert proc.returncode == 0, proc.stderr
    assert "--dockerfile" in proc.stdout
    line = next(line for line in proc.stderr.splitlines() if line.startswith("REPORT "))
    isolated, no_site, site_loaded, path, package = json.loads(line.removeprefix("REPORT "))
    assert (isolated, no_site, site_loaded) == (1, 1, False)
    assert str(ROOT) in path and "" not in path and str(tmp_path) not in path
    assert package == str(ROOT / "pybuildless" / "__init__.py")


@needs_root
def test_a_registry_build_loads_requests_but_not_its_charset_detector(tmp_path: Path, busybox_image: str) -> None:
    # requests imports charset_normalizer at import time; the entry points defer it (cli/deferred.py)
    context = _context(tmp_path, f"FROM {busybox_image}\nRUN echo hi > /hi\n")
    registry = busybox_image.split("/", 1)[0]
    code, loaded, stand_ins, stderr = _run_with_stand_ins(
        tmp_path, "executor", "-c", str(context), "-d", f"{registry}/deferred:1", "--insecure", "--insecure-pull")
    assert code == 0, stderr
    assert {"requests", "urllib3", "pybuildless.registry.transport"} <= loaded, stderr
    assert "charset_normalizer" not in loaded and "charset_normalizer.api" not in loaded
    assert "charset_normalizer" in stand_ins
    assert "RequestsDependencyWarning" not in stderr and "Unable to find acceptable" not in stderr


DETECTOR_STILL_WORKS = """
import sys, warnings
warnings.simplefilter("error")  # requests' dependency warning would be an error
from pybuildless.cli.deferred import _StandIn, defer_detectors
defer_detectors()
import requests
assert isinstance(sys.modules["charset_normalizer"], _StandIn), sys.modules["charset_normalizer"]
assert requests.__version__ and "charset_normalizer.api" not in sys.modules
response = requests.models.Response()
response._content = "d\u00e9j\u00e0 vu, tr\u00e8s \u00e9l\u00e9gant, na\u00efve fa\u00e7ade".encode("utf-8")
response.encoding = None
print(response.apparent_encoding, response.text)
import charset_normalizer.api
print(type(sys.modules["charset_normalizer"]).__name__, callable(charset_normalizer.from_bytes))
"""


def test_a_deferred_detector_loads_when_requests_needs_it(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", DETECTOR_STILL_WORKS], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    detected, rest = proc.stdout.splitlines()
    assert detected.lower() == "utf-8 d\u00e9j\u00e0 vu, tr\u00e8s \u00e9l\u00e9gant, na\u00efve fa\u00e7ade"
    assert rest == "module True"  # the real package replaced the stand-in in sys.modules


COLLECTOR_AFTER = """
import atexit, gc, sys
atexit.register(lambda: print("GC", gc.isenabled(), gc.get_freeze_count() > 0, file=sys.stderr))
from pybuildless.cli import main
main()
"""


@needs_root
def test_the_program_pauses_the_collector_through_start_up_only(tmp_path: Path) -> None:
    context = _context(tmp_path, "FROM scratch\nENV A=1\n")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", COLLECTOR_AFTER, "build", "-c", str(context), "--no-push"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    # running again once the build began, with start-up's objects frozen out of later collections
    assert "GC True True" in proc.stderr.splitlines(), proc.stderr

    # a caller in the same process (args given) keeps its collector as it was
    code = ("import gc, sys\nfrom pybuildless.cli import main\ntry:\n    main(['build', '--help'])\n"
            "except SystemExit:\n    pass\nprint(gc.isenabled(), gc.get_freeze_count())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.split()[-2:] == ["True", "0"], proc.stdout + proc.stderr
