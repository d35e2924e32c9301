"""BuildKit is the reference: every case under ``tests/differential/`` is built by pybuildless and by
BuildKit (Debian's docker.io 20.10 daemon, ``DOCKER_BUILDKIT=1 docker build``, the engine fixture),
both from the busybox base in the session registry, both pushed there, unpacked with skopeo + umoci
and compared by ``tests.differential.compare`` (file tree with modes, owners, contents, link targets
and xattrs; hardlinks; config; layer count where the rule is about layers). Every allowed difference
is listed in that module, with its reason and source; nothing else may differ.

The daemon reaches the loopback registry over plain HTTP with no configuration: moby treats
127.0.0.0/8 as insecure by default (registry/config.go, v20.10.24, ``registries = append(registries,
"127.0.0.0/8")``).

Cases using what BuildKit 20.10 cannot build (heredocs, COPY --link/--parents/--exclude) name a
``Dockerfile.reference`` the documentation makes equivalent, which the reference builders build instead.
All builds start in a thread pool when the first case runs (``tests.differential.builds``); each case
then waits for its two images.
"""

from __future__ import annotations

import os

import pytest

from tests.differential import cases, load_case
from tests.differential.builds import build_with_buildkit, selected_cases, shared_builds, submit_pybuildless
from tests.differential.compare import BUILDKIT, verdict

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot, dockerd)"),
]

CASES = cases()


@pytest.fixture(scope="session")
def buildkit_builds(request, tmp_path_factory, dockerd, registry, busybox_image):
    """Every case submitted for building by pybuildless and BuildKit (the pool runs them in order)."""
    builds = shared_builds()
    work = tmp_path_factory.mktemp("differential-buildkit")
    # Interleaved, so the first cases' pairs finish first; only the cases this run selected.
    for case in selected_cases(request, CASES, "test_differential_buildkit.py"):
        submit_pybuildless(builds, case, registry, busybox_image, work)
        builds.submit(BUILDKIT, case, lambda c=case: build_with_buildkit(
            c, dockerd, registry, busybox_image, work / f"{c.name}-buildkit"))
    yield builds
    builds.close()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_same_image_as_buildkit(case, buildkit_builds):
    ours = buildkit_builds.result("pybuildless", case)
    theirs = buildkit_builds.result(BUILDKIT, case)
    failures = verdict(case, ours, theirs, BUILDKIT)
    assert not failures, "\n".join(failures)


def test_corpus_size_and_headers():
    """At least 60 cases, each naming the one rule it pins; reference Dockerfiles exist."""
    assert len(CASES) >= 60, f"only {len(CASES)} differential cases"
    for case in CASES:
        assert case.rule, f"{case.name}/Dockerfile has no '# rule:' line"
        assert (case.path / case.reference_dockerfile).is_file(), f"{case.name}: {case.reference_dockerfile}"
        if case.reference_dockerfile != "Dockerfile":
            assert case.reference_note, f"{case.name}: say why the reference builds {case.reference_dockerfile}"
    assert load_case(CASES[0].name) == CASES[0]
