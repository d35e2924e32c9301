"""RUN network modes, checked against the host rather than by counting interfaces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pybuildless.sandbox import ChrootSandbox
from tests.test_sandbox import make_busybox_root, sh

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the chroot sandbox needs root"),
]


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory):
    sandbox = ChrootSandbox(make_busybox_root(tmp_path_factory.mktemp("edges") / "rootfs"))
    yield sandbox
    sandbox.close()


def host_netns() -> str:
    return os.readlink("/proc/self/ns/net")


@pytest.mark.parametrize("network", ["host", "default"])
def test_host_and_default_network_share_the_hosts_namespace(box: ChrootSandbox, network: str) -> None:
    """Dockerfile reference, RUN --network: ``host`` runs "in the host's network environment";
    Kaniko has no network isolation, so ``default`` is the same. Same namespace = same
    ``/proc/self/ns/net`` link (namespaces(7)), and the host's interfaces are listed."""
    code, out = sh(box, "readlink /proc/self/ns/net; ls /sys/class/net", network=network)
    assert code == 0, out
    netns, *interfaces = out.split()
    assert netns == host_netns()
    assert sorted(interfaces) == sorted(os.listdir("/sys/class/net"))


def test_network_none_gets_its_own_namespace(box: ChrootSandbox) -> None:
    code, out = sh(box, "readlink /proc/self/ns/net", network="none")
    assert code == 0 and out.startswith("net:[") and out.strip() != host_netns()
