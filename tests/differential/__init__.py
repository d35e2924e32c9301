"""Differential build cases and the builders that build them.

One directory per case: a ``Dockerfile`` whose base comes from ``ARG BASE``, plus its context. The
Dockerfile's leading comment lines describe the case:

    # rule: <the one rule of the Dockerfile reference this case pins>
    # layers: compared                  (the rule is about layers: the layer counts must match too)
    # reference: FILE <why>             (the reference builders build FILE instead: a Dockerfile
                                         the documentation says is equivalent, for features BuildKit
                                         20.10 and buildah 1.28 lack)
    # buildah: not compared: <why>     (buildah 1.28 cannot build it, or builds it differently from
                                         BuildKit where pybuildless follows BuildKit: BuildKit only)

An optional ``.prepare`` shell script runs in each private copy of the context (then is removed), for
what git cannot store: owners, modes other than 0644/0755, archives with chosen root entries.

buildah always runs against its own storage, registries.conf and signature policy in a scratch
directory, so nothing here reads or writes the machine's container storage or configuration.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

CASES_DIR = Path(__file__).resolve().parent
_HEADER = re.compile(r"^#\s*(rule|layers|reference|buildah)\s*:\s*(.*?)\s*$")


@dataclass(frozen=True)
class Case:
    name: str
    rule: str
    compare_layers: bool = False
    reference_dockerfile: str = "Dockerfile"  # what BuildKit and buildah build
    reference_note: str = ""
    buildah_note: str = ""  # non-empty: not compared with buildah, and why

    @property
    def path(self) -> Path:
        return CASES_DIR / self.name


def load_case(name: str) -> Case:
    """The case's header comments (see the module doc); ``rule`` is empty when the line is missing."""
    fields: dict[str, str] = {}
    for line in (CASES_DIR / name / "Dockerfile").read_text().splitlines():
        m = _HEADER.match(line)
        if m:
            fields.setdefault(m.group(1), m.group(2))
        elif line.strip() and not line.startswith("#"):
            break
    reference_file, _, reference_note = fields.get("reference", "Dockerfile").partition(" ")
    return Case(name=name, rule=fields.get("rule", ""), compare_layers=fields.get("layers") == "compared",
                reference_dockerfile=reference_file, reference_note=reference_note.strip(),
                buildah_note=fields.get("buildah", ""))


def case_names() -> list[str]:
    """Every case directory holding a Dockerfile, sorted."""
    return sorted(p.parent.name for p in CASES_DIR.glob("*/Dockerfile"))


def cases() -> list[Case]:
    return [load_case(name) for name in case_names()]


def buildah_case_names() -> list[str]:
    """Cases buildah 1.28 builds as written (for the build benchmark): no ``# buildah:`` exclusion, no
    reference Dockerfile, no image reference to fill in."""
    return [c.name for c in cases() if not c.buildah_note and c.reference_dockerfile == "Dockerfile"
            and "@BASE_IMAGE@" not in (c.path / "Dockerfile").read_text()]


def copy_case(name: str, dest: Path, base_image: str | None = None) -> Path:
    """A private copy of case ``name``'s context (so no builder sees another's leftovers), with its
    ``.prepare`` script run in it and removed, and ``@BASE_IMAGE@`` in its Dockerfiles replaced by
    ``base_image`` (for instructions that take no ARG, like ``COPY --from=IMAGE``)."""
    shutil.copytree(CASES_DIR / name, dest, symlinks=True)
    _modes_as_git_records(dest)
    for dockerfile in dest.glob("Dockerfile*"):
        text = dockerfile.read_text()
        if "@BASE_IMAGE@" in text:
            if base_image is None:
                raise ValueError(f"{name}: the case needs a base image reference")
            dockerfile.write_text(text.replace("@BASE_IMAGE@", base_image))
    prepare = dest / ".prepare"
    if prepare.exists():
        proc = subprocess.run(["/bin/sh", "-e", str(prepare)], cwd=dest, capture_output=True, timeout=60)
        prepare.unlink()
        if proc.returncode != 0:
            raise RuntimeError(f"{name}/.prepare failed: {proc.stderr.decode(errors='replace')}")
    return dest


def _modes_as_git_records(tree: Path) -> None:
    """Git keeps only a file's executable bit; a checkout made under another umask (002 gives 0664
    files and 0775 directories) would hand the builders other modes than the cases were written
    for, and a reference Dockerfile that makes a directory (0755) would no longer match one that
    copies it. Directories become 0755, files 0755 or 0644, as a checkout under umask 022."""
    for path in [tree, *tree.rglob("*")]:
        if path.is_symlink():
            continue
        if path.is_dir():
            path.chmod(0o755)
        else:
            path.chmod(0o755 if path.stat().st_mode & 0o111 else 0o644)


class BuildahError(RuntimeError):
    """A buildah command failed; the message carries its output."""


@dataclass(frozen=True)
class Buildah:
    """buildah confined to ``home`` (storage, run root, configuration), talking to insecure ``registry_host``."""

    home: Path
    registry_host: str
    # The environment to start from, taken when the value is made: build threads must not copy
    # os.environ while pytest rewrites it.
    base_env: dict[str, str] = field(default_factory=lambda: dict(os.environ), compare=False, repr=False)

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
            **{k: v for k, v in self.base_env.items() if k != "PYTEST_CURRENT_TEST"},
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

    def build_and_push(self, context: Path, ref: str, build_args: dict[str, str],
                       dockerfile: str = "Dockerfile") -> None:
        """``buildah bud --isolation chroot --layers`` (a layer per step, like BuildKit) then push ``ref``."""
        flags = [f"--build-arg={k}={v}" for k, v in build_args.items()]
        self.run("bud", "--isolation", "chroot", "--layers", "--tls-verify=false",
                 f"--signature-policy={self.home / 'policy.json'}", *flags,
                 "-f", str(context / dockerfile), "-t", ref, str(context))
        self.run("push", "--tls-verify=false", f"--signature-policy={self.home / 'policy.json'}", ref)
