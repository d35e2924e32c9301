"""Differential build cases (one directory per case: a ``Dockerfile`` whose base comes from ``ARG BASE``, plus
its context) and the helpers that build them with buildah, shared by the differential tests and by
``benchmarks/build.py``.

buildah always runs against its own storage, registries.conf and signature policy in a scratch
directory, so nothing here reads or writes the machine's container storage or configuration.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CASES_DIR = Path(__file__).resolve().parent


def case_names() -> list[str]:
    """Every case directory holding a Dockerfile, sorted."""
    return sorted(p.parent.name for p in CASES_DIR.glob("*/Dockerfile"))


def copy_case(name: str, dest: Path) -> Path:
    """A private copy of case ``name``'s context (so neither builder sees the other's leftovers)."""
    shutil.copytree(CASES_DIR / name, dest, symlinks=True)
    return dest


class BuildahError(RuntimeError):
    """A buildah command failed; the message carries its output."""


@dataclass(frozen=True)
class Buildah:
    """buildah confined to ``home`` (storage, run root, configuration), talking to insecure ``registry_host``."""

    home: Path
    registry_host: str

    @classmethod
    def create(cls, home: Path, registry_host: str) -> "Buildah":
        home.mkdir(parents=True, exist_ok=True)
        (home / "storage.conf").write_text(
            "[storage]\n"
            'driver = "vfs"\n'
            f'runroot = "{home / "run"}"\n'
            f'graphroot = "{home / "root"}"\n'
        )
        (home / "registries.conf").write_text(
            'unqualified-search-registries = []\n'
            "[[registry]]\n"
            f'location = "{registry_host}"\n'
            "insecure = true\n"
        )
        (home / "policy.json").write_text('{"default": [{"type": "insecureAcceptAnything"}]}\n')
        (home / "auth.json").write_text('{"auths": {}}\n')  # anonymous registry; buildah wants the file
        return cls(home, registry_host)

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CONTAINERS_STORAGE_CONF": str(self.home / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(self.home / "registries.conf"),
            # No user-level containers.conf or auth file from the machine.
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "REGISTRY_AUTH_FILE": str(self.home / "auth.json"),
            "BUILDAH_ISOLATION": "chroot",
        }

    def _global_flags(self) -> list[str]:
        return ["--root", str(self.home / "root"), "--runroot", str(self.home / "run"), "--storage-driver", "vfs"]

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        proc = subprocess.run(["buildah", *self._global_flags(), *args], env=self._env(), capture_output=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise BuildahError(f"buildah {' '.join(args)} failed ({proc.returncode}):\n"
                               f"{proc.stdout.decode(errors='replace')}\n{proc.stderr.decode(errors='replace')}")
        return proc

    def build_and_push(self, context: Path, ref: str, build_args: dict[str, str]) -> None:
        """``buildah bud --isolation chroot --layers`` (a layer per step, like BuildKit) then push ``ref``."""
        flags = [f"--build-arg={k}={v}" for k, v in build_args.items()]
        self.run("bud", "--isolation", "chroot", "--layers", "--tls-verify=false",
                 f"--signature-policy={self.home / 'policy.json'}", *flags,
                 "-f", str(context / "Dockerfile"), "-t", ref, str(context))
        self.run("push", "--tls-verify=false", f"--signature-policy={self.home / 'policy.json'}", ref)
