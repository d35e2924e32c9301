"""A fixed handful of the random differential cases (``tests/fuzz_dockerfiles.py``): each seed's
Dockerfile is built by pybuildless with its layer store, by pybuildless with ``--no-layer-store`` and
by BuildKit (the dockerd fixture), and the images are compared layer by layer (``tests/fuzz_layers.py``).

The long run (hundreds of seeds, outside pytest) is ``python3 -m tests.fuzz_run --seeds 0:300 --out DIR``
(docs/differential-testing.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.fuzz_dockerfiles import generate
from tests.fuzz_layers import Image, Layer, image_differences, read_layer
from tests.fuzz_run import check_case

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot, dockerd)"),
]

# Seeds covering multi-stage COPY --from, USER + WORKDIR, --link/--parents/--exclude, ADD of tars, base
# images built by BuildKit (756) and by pybuildless (702, 795), hard links to earlier layers, recreated
# directories and renames (2-6 s each on a loaded 2-core machine). 721, 734, 736 and 795 ADD tars whose
# hard-link entries say other than their target, and 734 a tar implying directories inside a
# set-group-ID one: both differed from BuildKit before the fixes of the extraction.
SEEDS = (702, 721, 734, 736, 754, 756, 764, 786, 795, 797, 798, 799)


# Cases checked at once: each alternates between CPU and waiting on a process, the registry or the daemon.
JOBS = 3
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def outcomes(request, dockerd, registry, busybox_image, tmp_path_factory):
    """Every seed this run selected, checked on a thread pool from the module's first test on; each
    seed has its own work dir and layer store, as with one test each."""
    seeds = [item.callspec.params["seed"] for item in request.session.items
             if item.nodeid.startswith(request.node.nodeid + "::") and hasattr(item, "callspec")
             and "seed" in item.callspec.params]
    work = tmp_path_factory.mktemp("fuzz-differential")
    pool = ThreadPoolExecutor(max_workers=JOBS, thread_name_prefix="fuzz")
    futures = {seed: pool.submit(check_case, generate(seed), dockerd, busybox_image, work / f"seed-{seed}",
                                 work / f"xdg-{seed}", registry) for seed in seeds}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_case_matches_buildkit(seed, outcomes):
    outcome = outcomes[seed].result(timeout=900)
    assert outcome.status == "same", f"seed {seed}:\n{generate(seed).dockerfile}\n{outcome.report}"


def test_generator_is_deterministic_and_varied():
    first = [generate(s) for s in range(30)]
    assert first == [generate(s) for s in range(30)]
    text = "\n".join(c.dockerfile for c in first)
    for feature in ("COPY --from=", "--chown=", "--chmod=", "COPY --link", "COPY --parents", "--exclude=",
                    "WORKDIR", "USER ", "ENV ", "ln -s", "rm -rf", "mkfifo", "chmod", "chown", "ADD "):
        assert feature in text, feature
    assert any(c.base_dockerfile for c in first) and any(not c.base_dockerfile for c in first)
    # the reference Dockerfile differs only where a flag BuildKit 20.10 lacks is used
    for case in first:
        uses = any(f in case.dockerfile for f in ("--link", "--parents", "--exclude"))
        assert (case.reference != case.dockerfile) == uses


def _layer(entries=None, whiteouts=(), opaque=()) -> Layer:
    return Layer(entries or {}, frozenset(), frozenset(whiteouts), frozenset(opaque))


def test_comparison_sees_each_kind_of_difference():
    base = _layer({"/etc": ("d", 0o755, 0, 0, "", ()), "/etc/a": ("f", 0o644, 0, 0, "x", ())})
    same = Image((base, _layer({"/etc/b": ("f", 0o644, 0, 0, "y", ())})), {})
    assert image_differences(same, same) == []
    variants = {
        "mode": _layer({"/etc/b": ("f", 0o600, 0, 0, "y", ())}),
        "owner": _layer({"/etc/b": ("f", 0o644, 1, 0, "y", ())}),
        "content": _layer({"/etc/b": ("f", 0o644, 0, 0, "z", ())}),
        "whiteout": _layer({"/etc/b": ("f", 0o644, 0, 0, "y", ())}, whiteouts={"/etc/a"}),
        "opaque": _layer({"/etc/b": ("f", 0o644, 0, 0, "y", ())}, opaque={"/etc"}),
        "extra entry": _layer({"/etc/b": ("f", 0o644, 0, 0, "y", ()), "/etc/a": ("f", 0o644, 0, 0, "x", ())}),
    }
    for what, layer in variants.items():
        assert image_differences(Image((base, layer), {}), same), what
    assert image_differences(Image((base,), {}), same)  # layer count


def test_hard_links_resolved_and_grouped(tmp_path):
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("a")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"1"))
        link = tarfile.TarInfo("b")
        link.type, link.linkname = tarfile.LNKTYPE, "a"
        tar.addfile(link)
        tar.addfile(tarfile.TarInfo(".wh..wh..opq"))
    raw.seek(0)
    layer = read_layer(raw)
    assert layer.entries["/a"] == layer.entries["/b"]
    assert layer.links == frozenset({frozenset({"/a", "/b"})})
    assert layer.opaque == frozenset({"/"})


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    """docs/differential-testing.md's long run, started with the module's first test (it starts its own
    registry and dockerd, so it runs beside the seeds' pool): (process, its output, its --out dir)."""
    work = tmp_path_factory.mktemp("fuzz-long-run")
    out = work / "fuzz"
    # its scratch dir holds dockerd's socket: a short temp dir (a unix socket path has < 108 bytes)
    scratch = tempfile.mkdtemp(prefix="fz-")
    env = {**os.environ, "TMPDIR": scratch, "PYTHONPATH": str(ROOT)}
    env.pop("PYTEST_CURRENT_TEST", None)
    with open(work / "output", "wb") as output:
        proc = subprocess.Popen([sys.executable, "-m", "tests.fuzz_run", "--seeds", "702:703", "--out", str(out)],
                                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
    try:
        yield proc, work / "output", out
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=120)
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def _start_at_once(request):
    """The seeds' pool and the long run both start with the module's first test."""
    wanted = {item.originalname for item in request.session.items
              if item.nodeid.startswith(request.node.nodeid + "::")}
    if os.geteuid() == 0:
        if "test_random_case_matches_buildkit" in wanted:
            request.getfixturevalue("outcomes")
        if "test_long_run_command_of_the_docs" in wanted:
            request.getfixturevalue("long_run")


def test_long_run_command_of_the_docs(long_run):
    """docs/differential-testing.md's long run, ``python3 -m tests.fuzz_run --seeds A:B --out DIR``,
    with one seed: it starts its own registry and dockerd, builds the case three ways and records it."""
    proc, output, out = long_run
    returncode = proc.wait(timeout=600)
    stdout = output.read_text(errors="replace")
    assert returncode == 0, stdout
    assert "seed 702: same" in stdout, stdout
    assert '"seed": 702, "status": "same"' in (out / "results.jsonl").read_text()
