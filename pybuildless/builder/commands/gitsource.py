"""ADD of a git repository: ``ADD https://host/org/repo.git#ref:subdir /dest``, ``git@host:org/repo.git``,
``git://host/repo.git``. The repository is cloned (submodules included) at ``ref`` (a branch, tag or
commit; default the remote HEAD); ``.git`` is dropped unless ``--keep-git-dir``; ``--checksum`` must
match the checked-out commit (a full SHA or a prefix)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

from pybuildless.errors import BuildError


def split_git_url(url: str) -> tuple[str, str | None, str | None]:
    """(repository URL, ref, subdir) from BuildKit's ``URL#ref:subdir`` form."""
    repo, _, fragment = url.partition("#")
    ref, _, subdir = fragment.partition(":")
    return repo, ref or None, subdir or None


def _git(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise BuildError(f"git {args[0]} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
    return proc.stdout.strip()


def fetch_git(url: str, dest: Path, *, keep_git_dir: bool, checksum: str | None) -> Path:
    """Clone into ``dest``; returns the directory to copy (the subdir when one is given)."""
    if shutil.which("git") is None:
        raise BuildError("ADD of a git repository needs the git command, which is not installed")
    repo, ref, subdir = split_git_url(url)
    _git("clone", "--quiet", "--recurse-submodules", repo, str(dest))
    if ref:
        _git("checkout", "--quiet", ref, cwd=dest)
        _git("submodule", "update", "--quiet", "--init", "--recursive", cwd=dest)
    commit = _git("rev-parse", "HEAD", cwd=dest)
    if checksum and not commit.startswith(checksum.removeprefix("sha1:")):
        raise BuildError(f"ADD {url}: checksum mismatch: checked out {commit}, want {checksum}")
    if not keep_git_dir:
        shutil.rmtree(dest / ".git")
    _normalise_modes(dest)
    source = dest / subdir if subdir else dest
    if not source.resolve().is_relative_to(dest.resolve()) or not source.is_dir():
        raise BuildError(f"ADD {url}: no directory {subdir!r} in the repository")
    return source


def _normalise_modes(root: Path) -> None:
    """Git records only the executable bit: files become 0644/0755, directories 0755 (as BuildKit)."""
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                os.chmod(path, 0o755 if st.st_mode & 0o100 else 0o644)
