"""Seeded random Dockerfiles over the busybox base, for differential runs against BuildKit.

``generate(seed)`` gives a ``FuzzCase``: a Dockerfile (stages of RUN steps that create, change, delete,
chmod and chown files and directories, make symbolic and hard links, also to files of earlier layers,
remove and make directories again, empty directories, FIFOs, sparse files, long and odd names; COPY
from a generated context with directories, wildcards, ``--chown``, ``--chmod``, ``--link``,
``--parents``, ``--exclude``; WORKDIR, USER, ENV; ``COPY --from`` of earlier stages), the Dockerfile
the reference builder builds, and the context. The same seed always gives the same case.

BuildKit 20.10 (Debian's docker.io) has no ``--link``, ``--parents`` or ``--exclude``: the reference
Dockerfile spells them with plain COPYs the Dockerfile reference makes equivalent (as the cases of
``tests/differential/`` do: copy_link, copy_parents, copy_exclude). The generator keeps to the cases
where that equivalence holds exactly: ``--link`` and ``--parents`` destinations under a directory no
step made before, ``--parents`` and ``--exclude`` sources below context directories of mode 0755,
an ``--exclude`` pattern matched against the first level of a flat directory.

A model of each stage's files (paths the case made, with their kind) keeps every step valid: names are
unique per case (a counter), so a new name never meets an old one; sources always exist; a RUN as a
non-root user writes only in a WORKDIR made for that user.
"""

from __future__ import annotations

import fnmatch
import gzip
import io
import os
import posixpath
import random
import shlex
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

# Applets of the base no step uses (deleting them whites out base files).
SPARE_APPLETS = ("/bin/vi", "/usr/bin/less", "/bin/rpm", "/usr/bin/telnet", "/usr/bin/ftpget", "/sbin/halt",
                 "/usr/bin/top", "/bin/ed", "/usr/bin/nslookup", "/sbin/mkswap")
ODD_NAMES = ("with space", "ünïcödé-名前", "#hash", "a=b,c", "-dash", ".hidden", "semi;colon", "quote'd",
             "dollar$x", "tab\tin", "brace{x}", "star*lit", "L" * 200, "question?")
MODES_FILE = (0o644, 0o755, 0o600, 0o640, 0o444, 0o700, 0o4755, 0o2755, 0o1755, 0o666, 0o750, 0o6711)
MODES_DIR = (0o755, 0o700, 0o750, 0o1777, 0o2775, 0o711, 0o555, 0o777)
IDS = ("0:0", "1000:1000", "1:2", "65534:65534", "12345:54321", "0:1000", "1000:0")
CHOWN_FLAGS = ("1000:1000", "user", "user:user", "12:34", "nobody", "0:1000", "1000", "root:user")
CHMOD_FLAGS = ("0600", "755", "0640", "4755", "0700", "2750", "0444", "1777")
USERS = ("1000", "user", "1000:1000", "nobody", "user:root", "65534:1000")


@dataclass(frozen=True)
class ContextEntry:
    """One path of the build context: kind f (file), d (directory), l (symlink), h (hard link to ``data``)."""

    path: str
    kind: str
    data: bytes | str = b""
    mode: int = 0o644
    owner: tuple[int, int] = (0, 0)
    xattrs: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class FuzzCase:
    seed: int
    dockerfile: str
    reference: str  # what BuildKit builds: the same as ``dockerfile`` unless a flag 20.10 lacks is used
    context: tuple[ContextEntry, ...]
    # A base image the case builds FROM, made first by one builder and pushed (its layers, with their
    # whiteouts, opaque markers and hard links, are then extracted by both): that builder's Dockerfile.
    base_dockerfile: str = ""
    base_builder: str = ""  # "buildkit" or "pybuildless"


@dataclass
class Stage:
    """The model of one stage: path -> kind (f, d, l, p for a FIFO) for what the case made."""

    name: str
    paths: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = ""

    def of_kind(self, *kinds: str) -> list[str]:
        return sorted(p for p, k in self.paths.items() if k in kinds)

    def remove(self, path: str) -> None:
        for p in [p for p in self.paths if p == path or p.startswith(path + "/")]:
            del self.paths[p]


class Generator:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.counter = 0
        self.context: list[ContextEntry] = []
        self.ctx_dirs: dict[str, list[str]] = {}  # context dir -> its direct children (names)
        self.plain_dirs: list[str] = []  # context dirs of mode 0755 whose parents are 0755 too
        self.flat_dir = ""
        self.stages: list[Stage] = []
        self.lines: list[str] = []
        self.ref_lines: list[str] = []
        self.uses_ref = False

    # -- names --------------------------------------------------------------------------------------

    def name(self, prefix: str = "n") -> str:
        self.counter += 1
        base = f"{prefix}{self.counter}"
        if self.rng.random() < 0.25:
            odd = self.rng.choice(ODD_NAMES)
            return f"{base}{odd}"[:250]
        return base

    def safe(self, prefix: str) -> str:
        """A new name with no odd characters (for paths Dockerfile words carry)."""
        self.counter += 1
        return f"{prefix}{self.counter}"

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    # -- the context --------------------------------------------------------------------------------

    def make_context(self) -> None:
        rng = self.rng
        for top in range(rng.randint(1, 3)):
            self._ctx_dir(f"c{top}", depth=0, plain=True)
        # a flat directory of files for --exclude (first-level matches only)
        self.flat_dir = "flat"
        self.context.append(ContextEntry("flat", "d", mode=0o755))
        names = []
        for i in range(rng.randint(2, 6)):
            n = f"x{i}{rng.choice(('.log', '.txt', '.md', ''))}"
            names.append(n)
            self.context.append(ContextEntry(f"flat/{n}", "f", self._content(), rng.choice((0o644, 0o755, 0o600))))
        self.ctx_dirs["flat"] = names
        self.context.append(ContextEntry("top.txt", "f", self._content(), 0o644))
        self.archives: dict[str, list[tuple[str, str]]] = {}
        for i in range(rng.randint(0, 2)):
            name = f"arch{i}.tar" + rng.choice(("", ".gz"))
            data, members = self._archive()
            self.context.append(ContextEntry(name, "f", data, 0o644))
            self.archives[name] = members
        self.ctx_dirs[""] = [p.path for p in self.context if "/" not in p.path]

    def _archive(self) -> tuple[bytes, list[tuple[str, str]]]:
        """A tar (gzip or not) for ADD: directories of odd modes and owners, files (set-uid too), symlinks,
        hard links, long and odd names, entries whose parents have no entry or come after them;
        (bytes, [(path, kind)])."""
        rng = self.rng
        buf = io.BytesIO()
        members: list[tuple[str, str]] = []
        files: list[str] = []
        top = f"t{self.counter}"
        self.counter += 1
        with tarfile.open(fileobj=buf, mode="w", format=rng.choice((tarfile.PAX_FORMAT, tarfile.GNU_FORMAT))) as tar:
            dirs = [top, f"{top}/sub", f"{top}/sub/{'D' * rng.choice((5, 120))}", f"{top}/noentry/below"]
            order = dirs[:3] if rng.random() < 0.5 else list(reversed(dirs[:3]))  # a directory after its children
            for d in order:
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, rng.choice(MODES_DIR) | 0o700
                info.uid, info.gid, info.mtime = rng.choice(((0, 0), (1000, 1000), (12, 34))) + (1_500_000_000,)
                tar.addfile(info)
                members.append((d, "d"))
            for i in range(rng.randint(1, 5)):
                d = rng.choice(dirs)
                name = f"{d}/{rng.choice(('a', 'ü名', 'sp ace', 'L' * 150, 'x.y'))}{i}"
                data = self._content()[:3000]
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), rng.choice(MODES_FILE)
                info.uid, info.gid, info.mtime = rng.choice(((0, 0), (1000, 1000), (12, 34))) + (1_500_000_000,)
                tar.addfile(info, io.BytesIO(data))
                files.append(name)
                members.append((name, "f"))
                if d == dirs[3] and (f"{top}/noentry", "d") not in members:
                    members += [(f"{top}/noentry", "d"), (dirs[3], "d")]  # made for the file, without entries
            if rng.random() < 0.6:
                info = tarfile.TarInfo(f"{top}/hard")
                info.type, info.linkname, info.mode = tarfile.LNKTYPE, rng.choice(files), 0o644
                tar.addfile(info)
                members.append((info.name, "f"))
            if rng.random() < 0.6:
                info = tarfile.TarInfo(f"{top}/sub/sym")
                info.type, info.linkname = tarfile.SYMTYPE, rng.choice(("../" + files[0][len(top) + 1:], "/etc/passwd", "nowhere"))
                info.mode, info.mtime = 0o777, 1_500_000_000
                tar.addfile(info)
                members.append((info.name, "l"))
        raw = buf.getvalue()
        return (gzip.compress(raw, mtime=0) if rng.random() < 0.5 else raw), members

    def _content(self) -> bytes:
        size = self.rng.choice((0, 1, 7, 100, 511, 512, 513, 4096, 70000))
        return bytes(self.rng.getrandbits(8) for _ in range(min(size, 600))) * (size // 600 + 1) if size else b""

    def _ctx_dir(self, path: str, depth: int, plain: bool) -> None:
        rng = self.rng
        mode = 0o755 if plain or rng.random() < 0.5 else rng.choice(MODES_DIR)
        owner = (0, 0) if rng.random() < 0.6 else (rng.randint(1, 3000), rng.randint(1, 3000))
        self.context.append(ContextEntry(path, "d", mode=mode | 0o700, owner=owner))
        plain = plain and mode == 0o755
        if plain:
            self.plain_dirs.append(path)
        children: list[str] = []
        files: list[str] = []
        for _ in range(rng.randint(1, 5)):
            n = self.name("f") if rng.random() < 0.5 else f"cf{len(self.context)}.{rng.choice(('txt', 'bin', 'sh'))}"
            files.append(n)
            xattrs = ((("user.fuzz", b"v%d" % rng.randint(0, 9)),) if rng.random() < 0.15 else ())
            self.context.append(ContextEntry(f"{path}/{n}", "f", self._content(), rng.choice(MODES_FILE),
                                             owner=owner, xattrs=xattrs))
        children += files
        if rng.random() < 0.5:
            n = f"cs{len(self.context)}"
            target = rng.choice((files[0], f"../{path.split('/')[-1]}", "/etc/passwd", "missing"))
            self.context.append(ContextEntry(f"{path}/{n}", "l", target))
            children.append(n)
        if rng.random() < 0.3:
            n = f"ch{len(self.context)}"
            self.context.append(ContextEntry(f"{path}/{n}", "h", f"{path}/{files[0]}"))
            children.append(n)
        if rng.random() < 0.3:
            n = f"ce{len(self.context)}"
            self.context.append(ContextEntry(f"{path}/{n}", "d", mode=rng.choice(MODES_DIR) | 0o700))
            children.append(n)
        if depth < 2:
            for _ in range(rng.randint(0, 2)):
                n = f"cd{len(self.context)}"
                self._ctx_dir(f"{path}/{n}", depth + 1, plain)
                children.append(n)
        self.ctx_dirs[path] = children

    def ctx_files(self, under: str = "") -> list[str]:
        return [e.path for e in self.context if e.kind in "fh" and e.path.startswith(under)]

    # -- emitting -----------------------------------------------------------------------------------

    def emit(self, line: str, reference: list[str] | None = None) -> None:
        self.lines.append(line)
        if reference is None:
            self.ref_lines.append(line)
        else:
            self.uses_ref = True
            self.ref_lines.extend(reference)

    # -- stages -------------------------------------------------------------------------------------

    def generate(self) -> FuzzCase:
        self.make_context()
        base_dockerfile = base_builder = ""
        base = Stage("base")
        # decided apart from the main stream, so a seed without a base image keeps its case
        if random.Random(self.seed * 7919 + 1).random() < 0.35:
            base_builder = self.rng.choice(("buildkit", "pybuildless"))
            self.lines, self.ref_lines = ["ARG BASE", "FROM $BASE"], ["ARG BASE", "FROM $BASE"]
            self.stages = [base]
            for _ in range(self.rng.randint(3, 7)):
                self.step(base, final=False)
            lines = self.ref_lines if base_builder == "buildkit" else self.lines
            base_dockerfile = "\n".join(lines) + "\n"
            self.lines, self.ref_lines, self.stages = [], [], []
        self.lines.append("ARG BASE")
        self.ref_lines.append("ARG BASE")
        n_stages = self.rng.choice((1, 1, 2, 2, 3))
        for i in range(n_stages):
            final = i == n_stages - 1
            name = f"s{i}"
            parent = None
            if i and self.rng.random() < 0.3:
                parent = self.rng.choice(self.stages)
            stage = Stage(name)
            if parent is not None:
                stage.paths = dict(parent.paths)
                stage.workdir, stage.user = parent.workdir, parent.user
                self.emit(f"FROM {parent.name} AS {name}")
            else:
                stage.paths, stage.workdir = dict(base.paths), base.workdir
                self.emit(f"FROM $BASE AS {name}")
            if stage.user:
                self.emit("USER root")
                stage.user = ""
            self.stages.append(stage)
            for _ in range(self.rng.randint(3, 8)):
                self.step(stage, final)
            if final:
                # COPY --from every earlier stage that no later stage is built from: BuildKit builds only
                # the stages the target needs; copying keeps them all in the comparison
                for earlier in self.stages[:-1]:
                    if earlier.name not in "".join(self.lines[-50:]) or self.rng.random() < 0.5:
                        self.copy_from(stage, earlier)
                if self.rng.random() < 0.5:
                    self.emit(f'CMD ["/bin/sh", "-c", "echo {self.seed}"]')
        return FuzzCase(self.seed, "\n".join(self.lines) + "\n",
                        "\n".join(self.ref_lines) + "\n", tuple(self.context), base_dockerfile, base_builder)

    def step(self, stage: Stage, final: bool) -> None:
        kind = self.rng.choices(("run", "copy", "workdir", "user", "env", "from"),
                                weights=(10, 5, 1.5, 1, 1, 1.5 if len(self.stages) > 1 else 0))[0]
        if kind == "run":
            self.run(stage)
        elif kind == "copy":
            self.copy(stage)
        elif kind == "workdir":
            self.workdir(stage)
        elif kind == "user":
            self.user(stage)
        elif kind == "env":
            var = f"V{self.counter}"
            self.counter += 1
            value = self.rng.choice(("plain", "with space", "/p/$HOME", "a=b"))
            self.emit(f"ENV {var}={shlex.quote(value)}")
        else:
            self.copy_from(stage, self.rng.choice(self.stages[:-1]))

    # -- WORKDIR and USER ---------------------------------------------------------------------------

    def workdir(self, stage: Stage) -> None:
        dirs = [d for d in stage.of_kind("d") if self._word(d)]
        if dirs and self.chance(0.3):
            path = self.rng.choice(dirs)
            self.emit(f"WORKDIR {path}")
        elif stage.workdir != "/" and self.chance(0.4):
            rel = self.safe("w")
            path = posixpath.join(stage.workdir, rel)
            self.emit(f"WORKDIR {rel}")
        else:
            path = "/" + self.safe("w") + ("/" + self.safe("w") if self.chance(0.5) else "")
            self.emit(f"WORKDIR {path}")
        self._add_dirs(stage, path)
        stage.workdir = path

    def user(self, stage: Stage) -> None:
        """USER then a WORKDIR of that user's and a RUN writing there, then back to root."""
        user = self.rng.choice(USERS)
        self.emit(f"USER {user}")
        path = "/" + self.safe("u") + ("/" + self.safe("u") if self.chance(0.5) else "")
        self.emit(f"WORKDIR {path}")
        self._add_dirs(stage, path)
        stage.workdir = path
        f, d = self.name("uf"), self.name("ud")
        self.emit(f"RUN echo {self.seed} > {shlex.quote(f)} && mkdir {shlex.quote(d)} && touch {shlex.quote(d)}/in")
        stage.paths[f"{path}/{f}"] = "f"
        stage.paths[f"{path}/{d}"] = "d"
        stage.paths[f"{path}/{d}/in"] = "f"
        if self.chance(0.5):
            self.copy(stage)
        self.emit(self.rng.choice(("USER root", "USER 0", "USER 0:0")))

    def _add_dirs(self, stage: Stage, path: str) -> None:
        while path not in ("/", ""):
            stage.paths.setdefault(path, "d")
            path = posixpath.dirname(path)

    @staticmethod
    def _word(path: str) -> bool:
        """Whether ``path`` can be one plain word of WORKDIR/COPY (no blanks, quotes, ``$`` or ``#``)."""
        return all(c not in path for c in " \t'\"\\$#")

    # -- RUN ----------------------------------------------------------------------------------------

    def run(self, stage: Stage) -> None:
        ops = [self.run_op(stage) for _ in range(self.rng.randint(1, 4))]
        ops = [o for o in ops if o]
        if not ops:
            ops = ["true"]
        self.emit("RUN " + " && ".join(ops))

    def parent_dir(self, stage: Stage) -> str:
        dirs = [d for d in stage.of_kind("d")] + ["/"] * 2 + ["/etc", "/tmp", "/home/user"]
        return self.rng.choice(dirs)

    def removable(self, stage: Stage, path: str) -> bool:
        # not the WORKDIR (RUN starts in it) nor /etc (where RUN's /etc/hosts and /etc/resolv.conf are mounted)
        return not (stage.workdir == path or stage.workdir.startswith(path + "/") or path == "/etc")

    def run_op(self, stage: Stage) -> str | None:
        rng = self.rng
        q = shlex.quote
        files, dirs = stage.of_kind("f"), stage.of_kind("d")
        op = rng.choices(
            ("mkdir", "write", "append", "rm", "rmdir", "recreate", "chmod", "chown", "symlink", "hardlink",
             "hardlink_base", "touch", "mv", "fifo", "sparse", "rm_base", "base_meta", "empty_dir", "chown_link"),
            weights=(6, 8, 3, 3, 2, 2, 4, 3, 3, 3, 1, 1.5, 2, 0.5, 0.7, 1, 0.7, 1.5, 0.7))[0]
        if op == "mkdir":
            path = posixpath.join(self.parent_dir(stage), self.name("d"))
            if self.chance(0.4):
                path = posixpath.join(path, self.name("d"))
            self._add_dirs(stage, path)
            mode = f"-m {rng.choice(MODES_DIR):o} " if self.chance(0.2) else ""
            return f"mkdir -p {mode}{q(path)}"
        if op in ("write", "empty_dir") or not files and op in ("append", "rm", "chmod", "hardlink", "touch", "mv"):
            if op == "empty_dir":
                path = posixpath.join(self.parent_dir(stage), self.name("e"))
                stage.paths[path] = "d"
                return f"mkdir {q(path)}"
            path = posixpath.join(self.parent_dir(stage), self.name("f"))
            stage.paths[path] = "f"
            size = rng.choice((0, 1, 100, 513, 10000))
            if size == 0:
                return f": > {q(path)}"
            return f"head -c {size} /bin/busybox > {q(path)}" if self.chance(0.3) else f"echo {q(path[-20:])} > {q(path)}"
        if op == "append":
            return f"echo more >> {q(rng.choice(files))}"
        if op == "rm":
            links = stage.of_kind("l", "p")
            path = rng.choice(files + links)
            stage.remove(path)
            return f"rm {q(path)}"
        if op == "rmdir":
            cands = [d for d in dirs if self.removable(stage, d)]
            if not cands:
                return None
            path = rng.choice(cands)
            stage.remove(path)
            return f"rm -rf {q(path)}"
        if op == "recreate":
            cands = [d for d in dirs if self.removable(stage, d)]
            if not cands:
                return None
            path = rng.choice(cands)
            stage.remove(path)
            stage.paths[path] = "d"
            out = f"rm -rf {q(path)} && mkdir {q(path)}"
            if self.chance(0.6):
                f = posixpath.join(path, self.name("r"))
                stage.paths[f] = "f"
                out += f" && echo again > {q(f)}"
            return out
        if op == "chmod":
            path = rng.choice(files + dirs if dirs else files)
            mode = rng.choice(MODES_DIR if stage.paths[path] == "d" else MODES_FILE)
            return f"chmod {mode:o} {q(path)}"
        if op == "chown":
            cands = files + dirs
            if not cands:
                return None
            return f"chown {rng.choice(IDS)} {q(rng.choice(cands))}"
        if op == "chown_link":
            links = stage.of_kind("l")
            if not links:
                return None
            return f"chown -h {rng.choice(IDS)} {q(rng.choice(links))}"
        if op == "symlink":
            path = posixpath.join(self.parent_dir(stage), self.name("l"))
            everything = sorted(stage.paths)
            target = rng.choice(
                [rng.choice(everything) if everything else "/etc/passwd", "/bin/busybox", "missing-target",
                 "../" + self.name("t"), posixpath.basename(rng.choice(everything)) if everything else "x", "."])
            stage.paths[path] = "l"
            return f"ln -s {q(target)} {q(path)}"
        if op in ("hardlink", "hardlink_base"):
            src = rng.choice(files) if op == "hardlink" else rng.choice(("/etc/passwd", "/etc/group", "/bin/busybox"))
            path = posixpath.join(self.parent_dir(stage), self.name("h"))
            stage.paths[path] = "f"
            return f"ln {q(src)} {q(path)}"
        if op == "touch":
            path = rng.choice(files + dirs if dirs else files)
            return f"touch -d @{rng.randint(1, 1999999999)} {q(path)}"
        if op == "mv":
            cands = files + [d for d in dirs if self.removable(stage, d)]
            src = rng.choice(cands)
            dest = posixpath.join(self.parent_dir(stage), self.name("m"))
            if dest.startswith(src + "/"):
                return None
            kind = stage.paths[src]
            moved = {p[len(src):]: k for p, k in stage.paths.items() if p == src or p.startswith(src + "/")}
            stage.remove(src)
            for rel, k in moved.items():
                stage.paths[dest + rel] = k
            stage.paths[dest] = kind
            return f"mv {q(src)} {q(dest)}"
        if op == "fifo":
            path = posixpath.join(self.parent_dir(stage), self.name("p"))
            stage.paths[path] = "p"
            return f"mkfifo {q(path)}"
        if op == "sparse":
            path = posixpath.join(self.parent_dir(stage), self.name("z"))
            stage.paths[path] = "f"
            return f"truncate -s {rng.choice((4096, 65536, 1048577))} {q(path)}"
        if op == "rm_base":
            applet = rng.choice(SPARE_APPLETS)
            return f"rm -f {applet}"
        if op == "base_meta":
            return rng.choice(("chmod 0750 /home/user", "chown 1:1 /home/user", "chmod 1777 /home",
                               "chown 1000 /etc/group", "chmod 0600 /etc/group", "touch /etc/passwd",
                               "echo extra >> /etc/passwd"))
        return None

    # -- COPY ---------------------------------------------------------------------------------------

    def fresh_top(self, stage: Stage, prefix: str) -> str:
        return "/" + self.safe(prefix)

    def dest_dir(self, stage: Stage) -> str:
        """An existing directory of the stage (one without blanks or quotes), or a new one."""
        dirs = [d for d in stage.of_kind("d") if self._word(d)]
        if dirs and self.chance(0.5):
            return self.rng.choice(dirs)
        return self.fresh_top(stage, "cp") + ("/" + f"sub{self.counter}" if self.chance(0.4) else "")

    def _copied_into(self, stage: Stage, src: str, dest: str) -> None:
        """Record what copying context path ``src`` (its contents, for a directory) into ``dest`` makes."""
        self._add_dirs(stage, dest)
        kinds = {e.path: e.kind for e in self.context}
        if kinds.get(src) == "d":
            for e in self.context:
                if e.path.startswith(src + "/"):
                    stage.paths[posixpath.join(dest, e.path[len(src) + 1:])] = "f" if e.kind == "h" else e.kind
        else:
            stage.paths[posixpath.join(dest, posixpath.basename(src))] = "f"

    def copy(self, stage: Stage) -> None:
        rng = self.rng
        what = rng.choices(("file", "dir", "wildcard", "multi", "link", "parents", "exclude", "rename", "root", "add"),
                           weights=(3, 3, 2, 1.5, 1.5, 1.5, 1.5, 1.5, 0.3, 2 if self.archives else 0))[0]
        flags = []
        if what not in ("link", "parents") and self.chance(0.3):
            flags.append(f"--chown={rng.choice(CHOWN_FLAGS)}")
        if what not in ("link", "parents") and self.chance(0.25):
            flags.append(f"--chmod={rng.choice(CHMOD_FLAGS)}")
        fl = "".join(f + " " for f in flags)
        dirs = [p for p in self.ctx_dirs if p and p != "flat"]
        simple_files = [p for p in self.ctx_files() if self._word(p) and p.count("/") >= 1]
        if what == "file" and simple_files:
            src = rng.choice(simple_files)
            dest = self.dest_dir(stage)
            self.emit(f"COPY {fl}{src} {dest}/")
            self._copied_into(stage, src, dest)
        elif what == "rename" and simple_files:
            src = rng.choice(simple_files)
            dest = posixpath.join(self.dest_dir(stage), self.safe("cf"))
            self.emit(f"COPY {fl}{src} {dest}")
            self._add_dirs(stage, posixpath.dirname(dest))
            stage.paths[dest] = "f"
        elif what == "dir":
            src = rng.choice(dirs)
            dest = self.dest_dir(stage)
            self.emit(f"COPY {fl}{src}{'/' if self.chance(0.5) else ''} {dest}{'/' if self.chance(0.5) else ''}")
            self._copied_into(stage, src, dest)
        elif what == "wildcard":
            src_dir = rng.choice(dirs)
            children = [c for c in self.ctx_dirs[src_dir] if self._word(c)] or ["*"]
            child = rng.choice(children)
            pattern = rng.choice(("*", child[:1] + "*", "?" + child[1:] if len(child) > 1 else "*",
                                  "*" + child[-2:], "[a-z]*"))
            dangling = {e.path for e in self.context if e.kind == "l" and (e.data == "missing" or e.data[0] == "/")}
            if any(fnmatch.fnmatchcase(c, pattern) and f"{src_dir}/{c}" in dangling for c in self.ctx_dirs[src_dir]):
                return  # a source symlink is followed, in the context: a missing target fails the build
            dest = self.fresh_top(stage, "wc")
            self.emit(f"COPY {fl}{src_dir}/{pattern} {dest}/")
            self._add_dirs(stage, dest)
        elif what == "multi" and len(simple_files) > 1:
            srcs = rng.sample(simple_files, 2)
            if posixpath.basename(srcs[0]) == posixpath.basename(srcs[1]):
                srcs = srcs[:1]
            dest = self.dest_dir(stage)
            self.emit(f"COPY {fl}{' '.join(srcs)} {dest}/")
            for s in srcs:
                self._copied_into(stage, s, dest)
        elif what == "link":
            src = rng.choice(dirs + simple_files)
            dest = self.fresh_top(stage, "lk")
            self.emit(f"COPY --link {src} {dest}/", [f"COPY {src} {dest}/"])
            self._copied_into(stage, src, dest)
        elif what == "parents" and self.plain_dirs:
            # sources of one directory: the reference copies them with one COPY (one layer, as --parents)
            src_dir = rng.choice(self.plain_dirs)
            under = [p for p in self.ctx_files() if self._word(p) and posixpath.dirname(p) == src_dir]
            if not under:
                return
            srcs = sorted(set(rng.sample(under, min(len(under), rng.randint(1, 2)))))
            dest = self.fresh_top(stage, "pp")
            self.emit(f"COPY --parents {' '.join(srcs)} {dest}/", [f"COPY {' '.join(srcs)} {dest}/{src_dir}/"])
            self._add_dirs(stage, f"{dest}/{src_dir}")
            for s in srcs:
                stage.paths[posixpath.join(dest, s)] = "f"
        elif what == "exclude":
            children = self.ctx_dirs["flat"]
            pattern = rng.choice(("*.log", "x1*", "*.md", "x[0-2]*", "nomatch"))
            kept = [c for c in children if not fnmatch.fnmatchcase(c, pattern)]
            dest = self.fresh_top(stage, "ex")
            ref = [f"COPY {fl}{' '.join('flat/' + c for c in kept)} {dest}/"]
            if not kept or flags:
                # an empty copy still makes the directory; --chown/--chmod then apply to it as well
                return
            self.emit(f"COPY {fl}--exclude={pattern} flat/ {dest}/", ref)
            self._add_dirs(stage, dest)
            for c in kept:
                stage.paths[f"{dest}/{c}"] = "f"
        elif what == "add":
            name = rng.choice(sorted(self.archives))
            dest = self.dest_dir(stage) if self.chance(0.3) else self.fresh_top(stage, "ad")
            self.emit(f"ADD {fl}{name} {dest}/")
            self._add_dirs(stage, dest)
            for path, kind in self.archives[name]:
                stage.paths[f"{dest}/{path}"] = kind
        elif what == "root":
            dest = self.fresh_top(stage, "all")
            self.emit(f"COPY {fl}. {dest}/")
            for e in self.context:
                stage.paths[f"{dest}/{e.path}"] = "f" if e.kind == "h" else e.kind
            self._add_dirs(stage, dest)

    def copy_from(self, stage: Stage, source: Stage) -> None:
        if source is stage:
            return
        cands = [p for p in source.of_kind("f", "d") if self._word(p)]
        dest = self.fresh_top(stage, "from")
        flags = ""
        if self.chance(0.2):
            flags += f"--chown={self.rng.choice(CHOWN_FLAGS)} "
        if not cands:
            self.emit(f"COPY {flags}--from={source.name} /etc/passwd {dest}/")
            stage.paths[f"{dest}/passwd"] = "f"
            return
        src = self.rng.choice(cands)
        self.emit(f"COPY {flags}--from={source.name} {src} {dest}/")
        self._add_dirs(stage, dest)
        if source.paths[src] == "d":
            for p, k in source.paths.items():
                if p.startswith(src + "/"):
                    stage.paths[dest + p[len(src):]] = k
        else:
            stage.paths[posixpath.join(dest, posixpath.basename(src))] = "f"


def generate(seed: int) -> FuzzCase:
    return Generator(seed).generate()


CONTEXT_MTIME = 1_600_000_000  # context files' times: old, so a copy that keeps them is visible


def write_case(case: FuzzCase, where: Path) -> tuple[Path, Path, Path]:
    """The context in ``where/ctx`` (owners, modes, xattrs and times set) and the two Dockerfiles next
    to it, outside the context (so ``COPY .`` copies the same files for both builders):
    (context, Dockerfile, reference Dockerfile)."""
    ctx = where / "ctx"
    ctx.mkdir(parents=True)
    dirs = []
    for e in case.context:
        path = ctx / e.path
        if e.kind == "d":
            path.mkdir(exist_ok=True)
            dirs.append(e)
            continue
        if e.kind == "f":
            path.write_bytes(e.data)
            os.chmod(path, e.mode)
            for k, v in e.xattrs:
                os.setxattr(path, k, v)
        elif e.kind == "l":
            path.symlink_to(e.data)
        elif e.kind == "h":
            os.link(ctx / e.data, path)
            continue
        os.chown(path, *e.owner, follow_symlinks=False)
        os.utime(path, (CONTEXT_MTIME, CONTEXT_MTIME), follow_symlinks=False)
    for e in sorted(dirs, key=lambda e: -e.path.count("/")):
        path = ctx / e.path
        os.chown(path, *e.owner)
        os.chmod(path, e.mode)
        os.utime(path, (CONTEXT_MTIME, CONTEXT_MTIME))
    dockerfile, reference = where / "Dockerfile", where / "Dockerfile.reference"
    dockerfile.write_text(case.dockerfile)
    reference.write_text(case.reference)
    return ctx, dockerfile, reference
