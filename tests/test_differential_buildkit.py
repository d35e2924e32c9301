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
All builds start in a child process when the session starts (``tests.fixtures.differential``); each
case then waits for its two images.
"""

from __future__ import annotations

import os

import pytest

from tests.differential import cases, load_case
from tests.differential.compare import BUILDKIT, verdict

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot, dockerd)"),
]

CASES = cases()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_same_image_as_buildkit(case, differential_builds):
    ours = differential_builds.result("pybuildless", case)
    theirs = differential_builds.result(BUILDKIT, case)
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
