"""Kaniko's command-line grammar: every flag of Kaniko's root.go in every spelling pflag accepts.

The flag list (tests/data/kaniko_flags.tsv) is transcribed from Kaniko v1.24.0's
cmd/executor/cmd/root.go; the grammar rules from spf13/pflag flag.go and cobra
command.go as vendored there; the boolean spellings from Go's strconv.ParseBool.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest

from pybuildless.cli.build import command
from pybuildless.cli.kaniko_args import DEPRECATED_ALIASES, normalise, parse_go_int
from pybuildless.errors import UsageError

DATA = Path(__file__).parent / "data" / "kaniko_flags.tsv"
ROOT = Path(__file__).resolve().parent.parent

GO_TRUE = ["1", "t", "T", "TRUE", "true", "True"]
GO_FALSE = ["0", "f", "F", "FALSE", "false", "False"]


def kaniko_flags() -> list[tuple[str, str, str, bool]]:
    rows = []
    for line in DATA.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, short, kind, *rest = line.split("\t") + [""]
        rows.append((name, short, kind, rest[0] == "hidden"))
    return rows


FLAGS = kaniko_flags()

# A value each non-boolean flag accepts, and how it reads back from click's params.
SAMPLE = {
    "verbosity": "DEBUG", "log-format": "json", "snapshot-mode": "redo", "snapshotMode": "time",
    "compression": "zstd", "custom-platform": "linux/arm64", "customPlatform": "linux/arm64",
    "cache-ttl": "1h30m", "registry-certificate": "reg.example=/etc/ca.pem",
    "registry-client-cert": f"reg.example={__file__},{__file__}", "git": "branch=main",
    "push-retry": "3", "image-fs-extract-retry": "2", "image-download-retry": "4", "compression-level": "7",
    "build-arg": "A=1", "label": "k=v", "registry-map": "index.docker.io=mirror.example",
}


def param_for(name: str) -> click.Option:
    name = DEPRECATED_ALIASES.get(name, name)
    for p in command.params:
        if f"--{name}" in p.opts:
            return p  # type: ignore[return-value]
    raise AssertionError(f"no click option for --{name}")


def parse(args: list[str]) -> dict:
    n = normalise(command, args)
    ctx = command.make_context("executor", list(n.args), resilient_parsing=False)
    return ctx.params


def expected(name: str, value: str):
    if name == "verbosity":
        return value.lower()
    if name in ("push-retry", "image-fs-extract-retry", "image-download-retry", "compression-level"):
        return int(value)
    return value


def read_back(params: dict, name: str):
    value = params[param_for(name).name]
    if isinstance(value, tuple):
        return tuple(str(v) for v in value)
    return str(value) if isinstance(value, Path) else value


def test_the_flag_list_is_kanikos():
    names = [f[0] for f in FLAGS]
    assert len(names) == 60 and len(set(names)) == 60
    assert {"tarPath", "use-new-run", "skip-push-permission-check", "registry-client-cert", "git"} <= set(names)


@pytest.mark.parametrize("name,short,kind,hidden", [f for f in FLAGS if f[2] == "bool"], ids=lambda v: str(v))
def test_boolean_flag_every_spelling(name, short, kind, hidden):
    param = param_for(name)
    negated = name == "no-push" or name == "no-push-cache"
    default = bool(param.default) if isinstance(param.default, bool) else False
    assert read_back(parse([f"--{name}"]), name) is True
    for spelling in GO_TRUE:
        assert read_back(parse([f"--{name}={spelling}"]), name) is True, spelling
    for spelling in GO_FALSE:
        assert read_back(parse([f"--{name}={spelling}"]), name) is False, spelling
    assert read_back(parse([f"--{name}=true", f"--{name}=false"]), name) is False  # the last one wins
    assert read_back(parse([]), name) is default
    with pytest.raises(UsageError, match="ParseBool"):
        parse([f"--{name}=yes"])  # Go rejects it, so do we
    with pytest.raises(UsageError, match='unknown command "true"'):
        parse([f"--{name}", "true"])  # cobra: a separate word after a boolean is a command
    assert not negated or param.name in ("no_push", "no_push_cache")


@pytest.mark.parametrize("name,short,kind,hidden", [f for f in FLAGS if f[2] != "bool"], ids=lambda v: str(v))
def test_value_flag_every_spelling(name, short, kind, hidden):
    value = SAMPLE.get(name, "/some/where" if kind == "string" else "x.example/app:1")
    spellings = [[f"--{name}", value], [f"--{name}={value}"]]
    if short:
        spellings += [[f"-{short}", value], [f"-{short}={value}"], [f"-{short}{value}"]]
    for args in spellings:
        got = read_back(parse(args), name)
        if kind == "repeatable":
            assert got == (value,), args
        else:
            assert got == expected(name, value), args
    if kind == "repeatable":
        assert read_back(parse([f"--{name}", value, f"--{name}={value}"]), name) == (value, value)
    with pytest.raises(UsageError, match="needs an argument"):
        parse([f"--{name}"])


def test_deprecated_spellings_land_on_their_flag_with_kanikos_warning():
    n = normalise(command, ["--tarPath", "o.tar", "--snapshotMode=redo", "--customPlatform", "linux/arm64",
                            "--whitelist-var-run=false"])
    params = command.make_context("executor", list(n.args)).params
    assert str(params["tar_path"]) == "o.tar" and params["snapshot_mode"] == "redo"
    assert params["custom_platform"] == "linux/arm64" and params["ignore_var_run"] is False
    assert "Flag --tarPath is deprecated. Use: --tar-path" in n.notes


def test_pflag_grammar_details():
    assert parse(["-v=warning"])["verbosity"] == "warn"  # logrus.ParseLevel's other spelling
    assert parse(["-vWARN"])["verbosity"] == "warn"
    assert parse(["", "--cache=true", "", "-c", "dir:///x", ""])["context"] == "dir:///x"  # "" is dropped
    assert parse(["--cache", "--", "ignored", "words"])["cache"] is True  # Kaniko ignores args after --
    assert parse(["--no-cache-run-layers"])["cache_run_layers"] is False  # our extra negative spelling
    assert parse(["--push-retry=0x10"])["push_retry"] == 16  # strconv.ParseInt(s, 0, 64)
    assert parse(["--destination=a.example/x:1", "-d", "b.example/y:2"])["destination"] == ("a.example/x:1",
                                                                                             "b.example/y:2")
    assert parse(["--context=a=b"])["context"] == "a=b"  # only the first = splits
    assert parse(["-f", "-"])["dockerfile"] == "-"
    with pytest.raises(UsageError, match="unknown flag: --nope"):
        parse(["--nope"])
    with pytest.raises(UsageError, match="unknown shorthand flag: 'x'"):
        parse(["-x"])
    with pytest.raises(UsageError, match='unknown command "build"'):
        parse(["build", "--context", "."])
    with pytest.raises(UsageError, match="bad flag syntax"):
        parse(["---cache"])
    assert normalise(command, ["version"]).version is True


@pytest.mark.parametrize("text,value", [("10", 10), ("0x1f", 31), ("0o17", 15), ("017", 15), ("0b11", 3),
                                        ("1_000", 1000), ("-3", -3), ("0", 0)])
def test_go_integers(text, value):
    assert parse_go_int(text, "--push-retry") == value


@pytest.mark.parametrize("ttl", ["6h", "1h30m", "336h", "90s", "1.5h", "0"])
def test_cache_ttl_takes_go_durations(ttl):
    assert parse([f"--cache-ttl={ttl}"])["cache_ttl"] == ttl


def test_cache_ttl_rejects_what_go_rejects():
    with pytest.raises(UsageError, match="--cache-ttl '6'"):
        parse(["--cache-ttl=6"])  # Go: "missing unit in duration"


def test_help_lists_every_visible_kaniko_flag():
    proc = subprocess.run([sys.executable, "-c", "from pybuildless.cli import executor_main; executor_main()",
                           "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for name, short, kind, hidden in FLAGS:
        if hidden:
            assert f"--{name} " not in proc.stdout, name
            continue
        assert f"--{name}" in proc.stdout, name
        if short:
            assert f"-{short}, --{name}" in proc.stdout, name


def test_bad_flag_is_one_line_and_exit_code(tmp_path):
    for args, text in ((["--cache=maybe"], "--cache"), (["--bogus"], "unknown flag: --bogus"),
                       (["--cache", "yes"], 'unknown command "yes"')):
        proc = subprocess.run([sys.executable, "-c", "from pybuildless.cli import executor_main; executor_main()",
                               *args], capture_output=True, text=True, cwd=tmp_path, timeout=60,
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        assert proc.returncode != 0
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and text in lines[0], proc.stderr
        assert list(tmp_path.iterdir()) == []


def test_readme_says_what_every_kaniko_flag_does_here():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| Kaniko flag | here |"):]
    table = table[:table.index("\n\n")]
    for name, short, kind, hidden in FLAGS:
        assert f"--{name}" in table, name


def options(args: list[str]):
    from pybuildless.cli.build import build_options

    return build_options(parse(args), "chroot")


def test_bucket_git_and_client_cert_values():
    assert options(["-b", "ctx-bucket"]).context == "gs://ctx-bucket"  # Kaniko's default for a bare bucket
    assert options(["--bucket=s3://b/ctx.tar.gz", "-c", "ignored"]).context == "s3://b/ctx.tar.gz"
    git = options(["--git=branch=dev", "--git", "single-branch=T", "--git=recurse-submodules=1",
                   "--git=depth=1"]).git  # an unknown key is ignored, as in Kaniko
    assert (git.branch, git.single_branch, git.recurse_submodules, git.insecure_skip_tls) == ("dev", True, True, False)
    with pytest.raises(UsageError, match="key=value"):
        options(["--git=branch"])
    with pytest.raises(UsageError, match="ParseBool"):
        options(["--git=single-branch=yes"])
    certs = options([f"--registry-client-cert=r.example={__file__},{__file__}"]).registry.client_certificates
    assert certs == (("r.example", __file__, __file__),)
    with pytest.raises(UsageError, match="HOST=CERT,KEY"):
        options([f"--registry-client-cert=r.example={__file__}"])
    # empty values of repeatable flags, as CI templates leave them, are dropped
    assert options(["--build-arg=", "--label", "", "--insecure-registry="]).build_args == ()


def test_executor_version_subcommand():
    proc = subprocess.run([sys.executable, "-c", "from pybuildless.cli import executor_main; executor_main()",
                           "version"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0 and "version" in proc.stdout
