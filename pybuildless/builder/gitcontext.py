"""``--context git://HOST/PATH[#REF[#COMMIT]]``: a build context cloned from a git repository.

Kaniko's rules (pkg/buildcontext/git.go, v1.24.0):

- the repository is fetched over ``https://HOST/PATH``; ``GIT_PULL_METHOD=http``
  (Kaniko's own switch, the only other value it accepts) makes it plain HTTP;
- ``#REF`` is a ref (``refs/heads/main``, ``refs/tags/v1``, ``refs/pull/1/head``)
  or a commit hash; ``#REF#COMMIT`` checks out COMMIT after fetching REF;
- ``--git branch=NAME`` picks ``refs/heads/NAME``, else ``refs/tags/NAME``, else
  fails with "invalid branch"; ``single-branch=true`` fetches only that ref;
  ``recurse-submodules=true`` checks out submodules too; ``insecure-skip-tls=true``
  skips certificate verification;
- credentials from ``GIT_USERNAME``/``GIT_PASSWORD``, or ``GIT_TOKEN`` as the user name.

Beyond Kaniko: a short ``#NAME`` is read as a branch, then a tag (go-git would
demand the full ``refs/heads/NAME``). The client is dulwich (pure Python), so the
executor image needs no git binary.
"""

from __future__ import annotations

import io
import logging
import os
import re
from pathlib import Path

from pybuildless.builder.options import GitOptions
from pybuildless.errors import UsageError

log = logging.getLogger(__name__)

_HASH = re.compile(r"^[0-9a-f]{40}$")


class GitContextError(UsageError):
    """A git:// context that cannot be fetched; the message names the flag and the URL."""


def pull_url(location: str) -> str:
    method = os.environ.get("GIT_PULL_METHOD", "")
    if method not in ("https", "http"):
        method = "https"  # Kaniko ignores any other value
    return f"{method}://{location}"


def _credentials() -> tuple[str | None, str | None]:
    user, password, token = (os.environ.get(k, "") for k in ("GIT_USERNAME", "GIT_PASSWORD", "GIT_TOKEN"))
    if token:
        return token, ""
    if user or password:
        return user, password
    return None, None


def _wanted_ref(refs: dict[bytes, bytes | None], name: str, *, branch_flag: bool) -> bytes:
    """The full ref name a user's REF or --git branch= names."""
    if name.startswith("refs/") and not branch_flag:
        return name.encode()
    for candidate in (f"refs/heads/{name}", f"refs/tags/{name}"):
        if candidate.encode() in refs:
            return candidate.encode()
    if branch_flag:
        raise GitContextError(f"--git branch={name}: invalid branch (no branch or tag of that name)")
    return name.encode()


def clone_context(spec: str, location: str, dest: Path, git: GitOptions) -> None:
    """Clone ``location`` (``HOST/PATH[#REF[#COMMIT]]``) and check it out into ``dest``."""
    from dulwich.client import get_transport_and_path
    from dulwich.errors import GitProtocolError, HangupException
    from dulwich.index import build_index_from_tree
    from dulwich.repo import Repo

    parts = location.split("#")
    url = pull_url(parts[0])
    ref = parts[1] if len(parts) > 1 and parts[1] else ""
    commit = parts[2] if len(parts) > 2 and parts[2] else ""
    what = f"--context={spec}"
    user, password = _credentials()
    kwargs: dict = {"username": user, "password": password} if user is not None else {}
    if git.insecure_skip_tls:
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        kwargs["pool_manager"] = urllib3.PoolManager(cert_reqs="CERT_NONE")
    client, path = get_transport_and_path(url, **kwargs)
    repo = Repo.init(str(dest))
    chosen: dict[str, bytes] = {}

    def determine_wants(refs: dict[bytes, bytes | None], depth: int | None = None) -> list[bytes]:
        tips = {name: sha for name, sha in refs.items() if sha is not None and not name.endswith(b"^{}")}
        if git.branch:
            target = _wanted_ref(tips, git.branch, branch_flag=True)
        elif ref and not _HASH.match(ref):
            target = _wanted_ref(tips, ref, branch_flag=False)
        else:
            target = b"HEAD"
        if target not in tips:
            raise GitContextError(f"{what}: {url} has no ref {target.decode()}")
        chosen["ref"], chosen["sha"] = target, tips[target]
        if git.single_branch:
            return [tips[target]]
        return sorted(set(sha for name, sha in tips.items()
                          if name == target or name.startswith((b"refs/heads/", b"refs/tags/"))))

    try:
        client.fetch(path, repo, determine_wants=determine_wants)
        checkout = commit or (ref if _HASH.match(ref) else "")
        sha = checkout.encode() if checkout else chosen["sha"]
        if sha not in repo.object_store:
            # a commit no fetched ref leads to: ask for it by hash (servers allow reachable ones)
            try:
                client.fetch(path, repo, determine_wants=lambda refs, depth=None: [sha])
            except (GitProtocolError, HangupException) as e:
                raise GitContextError(f"{what}: commit {sha.decode()} not found in {url} "
                                      f"(no fetched ref leads to it, and the server refused it by hash: {e})") from None
        obj = repo[sha]
        while obj.type_name == b"tag":  # an annotated tag: check out what it points to
            obj = repo[obj.object[1]]
        if obj.type_name != b"commit":
            raise GitContextError(f"{what}: {sha.decode()} is not a commit")
    except GitContextError:
        raise
    except KeyError as e:
        missing = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
        raise GitContextError(f"{what}: commit {missing} not found in {url}") from None
    except (GitProtocolError, HangupException, OSError) as e:
        raise GitContextError(f"{what}: cannot fetch {url}: {e}") from None
    except Exception as e:  # dulwich reports HTTP failures with its own exception types
        if type(e).__module__.startswith(("dulwich", "urllib3")):
            raise GitContextError(f"{what}: cannot fetch {url}: {e}") from None
        raise
    repo.refs[b"HEAD"] = obj.id  # detached, as Kaniko leaves a checkout by hash
    build_index_from_tree(repo.path, repo.index_path(), repo.object_store, obj.tree)
    log.info("git context %s at %s (%s)", url, obj.id.decode()[:12], chosen.get("ref", b"HEAD").decode())
    if git.recurse_submodules and (dest / ".gitmodules").exists():
        _submodules(repo, what)


def _submodules(repo, what: str) -> None:
    from dulwich import porcelain

    try:
        porcelain.submodule_init(repo)
        porcelain.submodule_update(repo, init=True, recursive=True, errstream=io.BytesIO())
    except Exception as e:  # noqa: BLE001 - one line naming the flag, whatever dulwich raised
        raise GitContextError(f"{what}: submodules (--git recurse-submodules=true): {e}") from None
