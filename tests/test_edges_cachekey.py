"""COPY and ADD steps at their edges (builder/commands/files.py): what their cache keys cover and
what they write.

A key that ignores an input is a stale cache hit that ships the wrong file, owner or mode, so each
input of the step is changed alone and must change the key. BuildKit keys a COPY/ADD by the whole
FileOp (moby/buildkit@73ed6825c4b7569379ef89df0aedcdbe64473d31 frontend/dockerfile/dockerfile2llb/
convert.go dispatchCopy: destination joined onto WORKDIR, ChownOpt, Chmod, ExcludePatterns,
Parents, the --link flag) and by the content hash of its sources; a git source by its op's
attributes (convert_copy.go: --keep-git-dir becomes llb.KeepGitDir(), client/llb/source.go).
ADD rules (Dockerfile reference, ADD): a URL is downloaded with mode 0600 and its Last-Modified
time, never unpacked; --checksum only with a single URL (or git) source; a local tar archive is
unpacked unless --unpack=false.
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import http.server
import io
import os
import socket
import stat
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from pybuildless.builder.commands.files import _is_git, _is_url
from pybuildless.errors import DockerfileError
from tests import gitdaemon
from tests.stepkit import SELF, expanded_step, stage

IDS = (os.geteuid(), os.getegid())


def _context(tmp_path: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = tmp_path / "context" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _key(tmp_path: Path, text: str, n: int = 0):
    run = stage(tmp_path, "FROM scratch\n" + text, run=False)
    from tests.stepkit import execute, instructions

    steps = instructions(run)
    for i in range(n):
        execute(run, steps[i])
    return expanded_step(run, n).cache_key(run.ctx)


def _owner_mode(path) -> tuple[tuple[int, int], int]:
    st = os.lstat(path)
    return (st.st_uid, st.st_gid), stat.S_IMODE(st.st_mode)


# -- cache keys -----------------------------------------------------------------------------------

COPY_VARIANTS = [
    ("COPY a.txt /d/\n", 0),
    ("COPY a.txt /e/\n", 0),
    ("COPY a.txt /d\n", 0),
    ("WORKDIR /w\nCOPY a.txt d/\n", 1),
    ("WORKDIR /v\nCOPY a.txt d/\n", 1),
    ("COPY --chown=1:1 a.txt /d/\n", 0),
    ("COPY --chown=1:2 a.txt /d/\n", 0),
    ("COPY --chmod=600 a.txt /d/\n", 0),
    ("COPY --chmod=640 a.txt /d/\n", 0),
    ("COPY --exclude=*.log a.txt /d/\n", 0),
    ("COPY --exclude=*.tmp a.txt /d/\n", 0),
    ("COPY --link a.txt /d/\n", 0),
    ("COPY --parents a.txt /d/\n", 0),
    ("COPY a.txt b.txt /d/\n", 0),
    ("COPY b.txt a.txt /d/\n", 0),
    ("COPY ./a.txt /d/\n", 0),
    ("COPY <<EOF /d/x\nhello\nEOF\n", 0),
    ("COPY <<EOF /d/x\nhallo\nEOF\n", 0),
    ("COPY <<OTHER /d/x\nhello\nOTHER\n", 0),
    ("ADD a.txt /d/\n", 0),
    ("ADD --unpack=false a.txt /d/\n", 0),
    ("ADD --unpack=true a.txt /d/\n", 0),
    ("ADD --chown=1:1 a.txt /d/\n", 0),
    ("ADD --link a.txt /d/\n", 0),
    ("ADD <<EOF /d/x\nhello\nEOF\n", 0),
]


def test_every_copy_input_is_in_the_key(tmp_path):
    """Each Dockerfile above differs from the others in one input: all keys differ, and the same
    text keys the same (a fresh context with the same files)."""
    keys = []
    for n, (text, skip) in enumerate(COPY_VARIANTS):
        _context(tmp_path / str(n), {"a.txt": b"A", "b.txt": b"B"})
        key = _key(tmp_path / str(n), text, skip)
        assert key is not None and all(isinstance(p, str) for p in key), text
        keys.append(repr(key))
        _context(tmp_path / f"again{n}", {"a.txt": b"A", "b.txt": b"B"})
        assert repr(_key(tmp_path / f"again{n}", text, skip)) == keys[-1], text
    dupes = {k: [t for (t, _), kk in zip(COPY_VARIANTS, keys) if kk == k] for k in keys if keys.count(k) > 1}
    assert not dupes


def test_the_key_follows_each_source_file(tmp_path):
    """Content and mode of every source count, also the second source's and a source file
    inside a directory; mtime does not."""
    _context(tmp_path, {"a.txt": b"A", "d/b.txt": b"B"})
    text = "COPY a.txt d /x/\n"
    first = _key(tmp_path, text)
    os.utime(tmp_path / "context" / "d" / "b.txt", (7, 7))
    assert _key(tmp_path, text) == first
    os.chmod(tmp_path / "context" / "d" / "b.txt", 0o600)
    second = _key(tmp_path, text)
    assert second != first
    (tmp_path / "context" / "a.txt").write_bytes(b"a")
    assert _key(tmp_path, text) not in (first, second)
    # ADD of a local file: the same
    add = _key(tmp_path, "ADD a.txt d /x/\n")
    (tmp_path / "context" / "a.txt").write_bytes(b"changed")
    assert _key(tmp_path, "ADD a.txt d /x/\n") != add


def test_the_digest_honours_excludes_and_parents(tmp_path):
    """An excluded file does not land, so changing it keeps the key; --parents lands the file at
    another path than without it, so the key differs."""
    _context(tmp_path, {"d/keep": b"k", "d/skip.log": b"1", "p/q/f": b"f"})
    text = "COPY --exclude=*.log d /x/\n"
    first = _key(tmp_path, text)
    (tmp_path / "context" / "d" / "skip.log").write_bytes(b"2")
    assert _key(tmp_path, text) == first
    (tmp_path / "context" / "d" / "keep").write_bytes(b"K")
    assert _key(tmp_path, text) != first
    plain, parents = _key(tmp_path, "COPY p/q/f /x/\n"), _key(tmp_path, "COPY --parents p/q/f /x/\n")
    assert plain[-1] != parents[-1], "the content digest itself sees where --parents puts the file"
    w1, w2 = _key(tmp_path, "WORKDIR /a\nCOPY p/q/f x/\n", 1), _key(tmp_path, "WORKDIR /b\nCOPY p/q/f x/\n", 1)
    assert w1[-1] != w2[-1], "and where a relative destination lands"


def test_from_keys_name_the_source_stage(tmp_path):
    """COPY --from keys on the source stage's key, not on the context."""
    from tests.test_steps_files import FROM_STAGE, _built_stage

    a = stage(tmp_path / "a", FROM_STAGE, index=1, results=_built_stage(tmp_path / "a", "k0"), run=False)
    b = stage(tmp_path / "b", FROM_STAGE, index=1, results=_built_stage(tmp_path / "b", "k1"), run=False)
    ka, kb = expanded_step(a, 0).cache_key(a.ctx), expanded_step(b, 0).cache_key(b.ctx)
    assert ka[-1] == "from=k0" and kb[-1] == "from=k1" and ka[:-1] == kb[:-1]
    (tmp_path / "a" / "context" / "data").mkdir()
    (tmp_path / "a" / "context" / "data" / "f").write_text("context")
    assert expanded_step(a, 0).cache_key(a.ctx) == ka, "the context is not read for --from"


def test_add_keys_checksum_unpack_and_keep_git_dir(tmp_path):
    sha = "sha256:" + "1" * 64
    url = "https://example.invalid/f.tgz"
    keys = [_key(tmp_path / str(n), text) for n, text in enumerate([
        f"ADD --checksum={sha} {url} /f\n",
        f"ADD --checksum=sha256:{'2' * 64} {url} /f\n",
        f"ADD --checksum={sha} --unpack=true {url} /f\n",
        f"ADD --checksum={sha} {url} /g\n",
        "ADD --checksum=abc123 https://example.invalid/r.git /src/\n",
        "ADD --checksum=abc123 --keep-git-dir=true https://example.invalid/r.git /src/\n",
    ])]
    assert all(k is not None for k in keys)
    assert len({repr(k) for k in keys}) == len(keys), keys
    assert f"src={url}" in keys[0] and f"checksum={sha}" in keys[0]
    # remote content without a checksum is never cached, with a local source beside it neither
    assert _key(tmp_path / "x", f"ADD {url} /f\n") is None
    _context(tmp_path / "y", {"a": b"a"})
    assert _key(tmp_path / "y", f"ADD a {url} /d/\n") is None
    assert _key(tmp_path / "z", "ADD git@example.invalid:o/r.git /src/\n") is None


# -- COPY -------------------------------------------------------------------------------------------


def test_heredoc_sources_are_0644_files_beside_context_sources(tmp_path):
    _context(tmp_path, {"a.txt": b"A"})
    run = stage(tmp_path, f"FROM scratch\nCOPY --chown={SELF} a.txt <<ONE <<TWO /d/\nfirst\nONE\nsecond\nTWO\n"
                          "COPY --chmod=700 <<EOF /x\nrun\nEOF\n")
    root = run.ctx.root
    assert (root / "d" / "ONE").read_text() == "first\n" and (root / "d" / "TWO").read_text() == "second\n"
    assert (root / "d" / "a.txt").read_bytes() == b"A"
    assert _owner_mode(root / "d" / "ONE") == (IDS, 0o644)
    assert _owner_mode(root / "x")[1] == 0o700
    assert (root / "x").read_text() == "run\n"
    assert set(run.outcomes[0].paths) == {"/d", "/d/ONE", "/d/TWO", "/d/a.txt"}
    assert run.outcomes[0].created_by == "COPY a.txt ONE TWO /d/ # buildkit"


def test_copy_link_takes_heredocs_and_from_into_its_own_tree(tmp_path):
    from tests.test_steps_files import _built_stage

    text = (f"FROM scratch AS src\nFROM scratch\nCOPY --link --chown={SELF} <<EOF /h\nx\nEOF\n"
            f"COPY --from=src --link --chown={SELF} /data /in/\n")
    run = stage(tmp_path, text, index=1, results=_built_stage(tmp_path, "k0"))
    here, there = run.outcomes
    assert open(os.path.join(here.layer_root, "h")).read() == "x\n" and not (run.ctx.root / "h").exists()
    assert open(os.path.join(there.layer_root, "in", "f")).read() == "from a stage"
    assert here.layer_root != there.layer_root
    assert there.created_by == "COPY --from=src --link /data /in/ # buildkit"
    assert str(there.layer_root).startswith(str(run.ctx.scratch_dir))
    plain = stage(tmp_path / "p", "FROM scratch\nCOPY <<EOF /h\nx\nEOF\n")
    assert plain.outcomes[0].layer_root is None and (plain.ctx.root / "h").read_text() == "x\n"


# -- ADD --------------------------------------------------------------------------------------------


def test_add_refuses_what_it_cannot_do(tmp_path):
    _context(tmp_path, {"a": b"a"})
    cases = [
        ("ADD https://example.invalid/r.git a /d/\n", "ADD of a git repository takes exactly one source"),
        ("ADD --checksum=sha256:00 a /d/\n", "--checksum can only be used with a single URL source"),
    ]
    for text, message in cases:
        run = stage(tmp_path, "FROM scratch\n" + text, run=False)
        with pytest.raises(DockerfileError) as err:
            expanded_step(run, 0).execute(run.ctx)
        assert str(err.value).endswith(f":2: {message}"), err.value
        assert err.value.line == 2
    run = stage(tmp_path, "FROM scratch\nCOPY a http://127.0.0.1:9/x /d/\n", run=False)
    with pytest.raises(DockerfileError) as err:
        expanded_step(run, 0).execute(run.ctx)
    assert str(err.value).endswith(":2: source can't be a URL for COPY"), err.value


def test_add_sources_in_order_and_archives(tmp_path):
    """One source after another: a directory made by the first takes the second; a local tar is
    unpacked unless --unpack=false."""
    _context(tmp_path, {"d/x": b"x", "f": b"f"})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("in.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"in"))
    (tmp_path / "context" / "a.tar").write_bytes(buf.getvalue())
    run = stage(tmp_path, "FROM scratch\nADD d f /t\nADD a.tar /u/\nADD --unpack=false a.tar /v/\n"
                          "ADD <<EOF /w\nheredoc\nEOF\n")
    root = run.ctx.root
    assert (root / "t" / "x").read_bytes() == b"x" and (root / "t" / "f").read_bytes() == b"f"
    assert (root / "u" / "in.txt").read_bytes() == b"in" and not (root / "u" / "a.tar").exists()
    assert (root / "v" / "a.tar").read_bytes() == buf.getvalue()
    assert (root / "w").read_text() == "heredoc\n"
    assert [o.created_by for o in run.outcomes] == ["ADD d f /t # buildkit", "ADD a.tar /u/ # buildkit",
                                                   "ADD a.tar /v/ # buildkit", "ADD EOF /w # buildkit"]
    assert set(run.outcomes[0].paths) == {"/t", "/t/x", "/t/f"}
    assert all(o.snapshot is True for o in run.outcomes)
    assert run.outcomes[3].paths == ("/w",)


@pytest.fixture
def web(tmp_path):
    """A loopback HTTP server: files from tmp_path/www with a fixed Last-Modified; 404 else."""
    www = tmp_path / "www"
    www.mkdir()
    modified = email.utils.formatdate(1_500_000_000, usegmt=True)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            name = self.path.strip("/") or "index"
            path = www / name
            if not path.is_file():
                self.send_response(404)
                self.end_headers()
                return
            data = path.read_bytes()
            self.send_response(200)
            if name.endswith(".gz-encoded"):
                data = gzip.compress(data)
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(data)))
            if name != "nodate":
                self.send_header("Last-Modified", "garbage" if name == "baddate" else modified)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_add_of_a_url_downloads_0600_with_its_date_and_never_unpacks(tmp_path, web):
    www, base = web
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("empty"), io.BytesIO(b""))
    (www / "pkg.tar").write_bytes(buf.getvalue())
    (www / "index").write_bytes(b"root")
    (www / "nodate").write_bytes(b"n")
    (www / "baddate").write_bytes(b"b")
    big = os.urandom((1 << 20) + 5)
    (www / "big").write_bytes(big)
    sha = hashlib.sha256(big).hexdigest()
    run = stage(tmp_path, f"FROM scratch\nADD {base}/pkg.tar /d/\nADD {base}/ /d/\n"
                          f"ADD --chmod=644 {base}/nodate {base}/baddate /e/\n"
                          f"ADD --checksum=sha256:{sha} {base}/big /big\n")
    root = run.ctx.root
    assert (root / "d" / "pkg.tar").read_bytes() == buf.getvalue(), "a download is never unpacked"
    assert _owner_mode(root / "d" / "pkg.tar") == ((0, 0), 0o600)
    assert os.stat(root / "d" / "pkg.tar").st_mtime == 1_500_000_000
    assert (root / "d" / "__unnamed__").read_bytes() == b"root"
    assert _owner_mode(root / "e" / "nodate")[1] == _owner_mode(root / "e" / "baddate")[1] == 0o644
    assert os.stat(root / "e" / "nodate").st_mtime != 1_500_000_000
    assert (root / "big").read_bytes() == big and _owner_mode(root / "big")[1] == 0o600
    assert set(run.outcomes[2].paths) == {"/e", "/e/nodate", "/e/baddate"}
    assert run.outcomes[0].created_by == f"ADD {base}/pkg.tar /d/ # buildkit"
    assert all(o.snapshot is True for o in run.outcomes)


def test_add_of_a_url_fails_with_one_line(tmp_path, web):
    www, base = web
    (www / "f").write_bytes(b"content")
    good = hashlib.sha256(b"content").hexdigest()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    cases = [
        (f"ADD {base}/missing /m\n", f"ADD {base}/missing: HTTP 404"),
        (f"ADD --checksum=sha256:{'0' * 64} {base}/f /f\n",
         f"ADD {base}/f: checksum mismatch: got sha256:{good}, want sha256:{'0' * 64}"),
        (f"ADD --checksum=md5:{good} {base}/f /f\n", f"ADD --checksum=md5:{good}: only sha256:<hex> is supported"),
        (f"ADD --checksum=sha256: {base}/f /f\n", "ADD --checksum=sha256:: only sha256:<hex> is supported"),
        (f"ADD http://127.0.0.1:{closed}/f /f\n", f"ADD http://127.0.0.1:{closed}/f: ConnectionError"),
    ]
    for text, message in cases:
        run = stage(tmp_path, "FROM scratch\n" + text, run=False)
        with pytest.raises(DockerfileError) as err:
            expanded_step(run, 0).execute(run.ctx)
        assert message in str(err.value) and err.value.line == 2, err.value
        assert not (run.ctx.root / "m").exists() and not (run.ctx.root / "f").exists()
    ok = stage(tmp_path / "ok", f"FROM scratch\nADD --checksum=sha256:{good} {base}/f /f\n")
    assert (ok.ctx.root / "f").read_bytes() == b"content"


@pytest.mark.parametrize("source, is_git", [
    ("git@example.invalid:o/r.git", True), ("git://example.invalid/r", True),
    ("https://example.invalid/o/r.git", True), ("http://example.invalid/r.git#main:sub", True),
    ("https://example.invalid/r.git/", False), ("https://example.invalid/r.tar.gz", False),
    ("ssh://example.invalid/r.git", False), ("r.git", False), ("agit@x", False),
])
def test_which_sources_are_git(source, is_git):
    """BuildKit's dockerfile2llb isGitSource / gitutil.ParseGitRef: git@ and git:// always, an
    http(s) URL whose path ends in .git."""
    assert _is_git(source) is is_git
    assert _is_url(source) is source.startswith(("http://", "https://"))


@pytest.fixture
def git_repo(tmp_path):
    """A git daemon on loopback serving one repository: README v1 (tag v1), then v2."""
    base = tmp_path / "git"
    work = tmp_path / "gitwork"
    work.mkdir(parents=True)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}

    def git(*a, cwd=work):
        return subprocess.run(["git", *a], cwd=cwd, check=True, capture_output=True, env=env, text=True).stdout

    git("init", "-q", "-b", "main")
    (work / "README").write_text("v1\n")
    git("add", "-A")
    git("commit", "-q", "-m", "one")
    commit = git("rev-parse", "HEAD").strip()
    git("tag", "v1")
    (work / "README").write_text("v2\n")
    git("commit", "-q", "-am", "two")
    git("clone", "-q", "--bare", str(work), str(base / "repo.git"), cwd=tmp_path)
    with gitdaemon.serving(base) as port:
        yield f"git://127.0.0.1:{port}/repo.git", commit


def test_add_of_a_git_repository(tmp_path, git_repo):
    url, commit = git_repo
    run = stage(tmp_path, f"FROM scratch\nADD --chown={SELF} {url} /src/\n"
                          f"ADD --keep-git-dir=true --checksum={commit} {url}#v1 /v1/\n")
    root = run.ctx.root
    assert (root / "src" / "README").read_text() == "v2\n" and not (root / "src" / ".git").exists()
    assert _owner_mode(root / "src" / "README") == (IDS, 0o644)
    assert (root / "v1" / "README").read_text() == "v1\n" and (root / "v1" / ".git").is_dir()
    assert run.outcomes[0].created_by == f"ADD {url} /src/ # buildkit"
    assert "/src/README" in run.outcomes[0].paths
    assert all(o.snapshot is True for o in run.outcomes)
    bad = stage(tmp_path / "bad", f"FROM scratch\nADD --checksum=deadbeef {url}#v1 /x/\n", run=False)
    with pytest.raises(DockerfileError, match="checksum") as err:
        expanded_step(bad, 0).execute(bad.ctx)
    assert err.value.line == 2 and not (bad.ctx.root / "x").exists()


def _recorded_owner(path) -> tuple[int, int]:
    from pybuildless.fs import owners

    st = os.lstat(path)
    return owners.recorded_owner(str(path)) or (st.st_uid, st.st_gid)


def test_copy_and_add_flags_reach_the_copy(tmp_path):
    """--chown (a numeric pair needs no passwd), --exclude, --parents and wildcards as the step
    carries them out (Dockerfile reference, COPY/ADD)."""
    _context(tmp_path, {"src/a.py": b"a", "src/b.log": b"b", "pkg/./m/x.py": b"x", "w1.txt": b"1", "w2.txt": b"2"})
    run = stage(tmp_path, "FROM scratch\nCOPY --chown=1234:5678 --exclude=*.log src /app/\n"
                          "COPY --parents pkg/m/x.py /p/\nCOPY w*.txt /w/\n"
                          "ADD --chown=4321:8765 --exclude=*.log src /add/\n"
                          "COPY --chown=1234:5678 <<EOF /h\nx\nEOF\n")
    root = run.ctx.root
    assert sorted(os.listdir(root / "app")) == ["a.py"] and sorted(os.listdir(root / "add")) == ["a.py"]
    assert _recorded_owner(root / "app" / "a.py") == (1234, 5678) == _recorded_owner(root / "app")
    assert _recorded_owner(root / "add" / "a.py") == (4321, 8765)
    assert _recorded_owner(root / "h") == (1234, 5678)
    assert (root / "p" / "pkg" / "m" / "x.py").read_bytes() == b"x"
    assert sorted(os.listdir(root / "w")) == ["w1.txt", "w2.txt"]


def test_a_gzip_content_encoding_is_undone(tmp_path, web):
    """BuildKit's HTTP source lets Go's client decompress a gzip Content-Encoding (moby/buildkit@73ed6825c4b7
    source/http/source.go: the explicit Accept-Encoding is dropped for the GET "otherwise the go http
    library will not transparently decompress the response body"): the file is the decoded body, and
    --checksum is of those bytes."""
    www, base = web
    (www / "page.gz-encoded").write_bytes(b"plain text\n" * 50)
    sha = hashlib.sha256(b"plain text\n" * 50).hexdigest()
    run = stage(tmp_path, f"FROM scratch\nADD --checksum=sha256:{sha} {base}/page.gz-encoded /p\n")
    assert (run.ctx.root / "p").read_bytes() == b"plain text\n" * 50
