"""BuildOptions as the command line fills it: one registry mapping, every field read, and the
Kaniko flags that change nothing here saying so.

Expected meanings come from Kaniko v1.24.0: cmd/executor/cmd/root.go (flags and defaults),
pkg/executor/build.go (a command whose ShouldCacheOutput() is false is neither retrieved from nor
pushed to the cache; RunCommand's is --cache-run-layers) and pkg/util/util.go (what each
--snapshot-mode hashes).
"""

from __future__ import annotations

import ast
import dataclasses
import os
from pathlib import Path

import pytest

from pybuildless.builder.options import BuildOptions
from pybuildless.cli.build import build_options, command, no_effect_lines
from pybuildless.cli.kaniko_args import normalise
from tests.buildkit import executor, write_context

ROOT = Path(__file__).resolve().parent.parent


def params(args: list[str]) -> dict:
    return command.make_context("executor", list(normalise(command, args).args)).params


def options(args: list[str]) -> BuildOptions:
    return build_options(params(args), "chroot")


def test_registry_flags_become_the_registry_options_in_one_place(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    got = options(["--insecure-registry=a.example", "--skip-tls-verify", "--registry-map=x=y;x2=y2",
                   "--registry-mirror=m.example", "--registry-certificate=c.example=/ca.pem",
                   f"--registry-client-cert=d.example={cert},{cert}", "--insecure-pull",
                   "--skip-tls-verify-pull", "--skip-tls-verify-registry=s.example",
                   "--skip-default-registry-fallback", "--push-retry=5"]).registry
    assert got.insecure_registries == ("a.example",) and got.plain_http("a.example")
    assert not got.plain_http("b.example") and got.plain_http("b.example", pull=True)
    assert got.verify_tls("z") is False and got.skip_tls_verify_registries == ("s.example",)
    assert got.registry_map == (("x", "y"), ("x2", "y2")) and got.registry_mirrors == ("m.example",)
    assert got.certificates == (("c.example", "/ca.pem"),)
    assert got.client_cert("d.example") == (str(cert), str(cert))
    assert got.skip_default_registry_fallback and got.retries == 5


@pytest.mark.parametrize("args,retries", [([], 3), (["--image-download-retry=7"], 7),
                                          (["--push-retry=1", "--image-download-retry=2"], 3)])
def test_registry_retries_are_the_larger_of_both_flags_and_at_least_three(args, retries) -> None:
    assert options(args).registry.retries == retries


def test_in_place_is_the_inplace_isolation() -> None:
    assert BuildOptions(isolation="inplace").in_place
    assert not any(BuildOptions(isolation=i).in_place for i in ("auto", "chroot", "userns"))


def test_cache_run_layers_decides_for_run_only() -> None:
    on, off = options([]), options(["--cache-run-layers=false"])
    assert on.cache_run_layers and not off.cache_run_layers  # Kaniko's default: true
    assert on.caches_layers_of("RUN") and not off.caches_layers_of("RUN")
    for keyword in ("COPY", "ADD", "WORKDIR"):
        assert on.caches_layers_of(keyword) and off.caches_layers_of(keyword)


def test_flags_without_an_effect_say_why() -> None:
    assert no_effect_lines(params([])) == []  # Kaniko's defaults: full, copy layers off
    lines = no_effect_lines(params(["--snapshot-mode=redo", "--cache-copy-layers"]))
    assert any(line.startswith("--snapshot-mode=redo: ") and "ctime" in line for line in lines)
    assert any(line.startswith("--cache-copy-layers: ") and "always cached" in line for line in lines)
    assert no_effect_lines(params(["--snapshot-mode=time"]))[0].startswith("--snapshot-mode=time: ")


def _attributes_read(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}


def test_every_build_option_is_read_by_the_build() -> None:
    """A field only the command line writes would be a flag that silently does nothing."""
    readers = [p for p in (ROOT / "pybuildless").rglob("*.py") if p.relative_to(ROOT).as_posix() != "pybuildless/cli/build.py"]
    read = set().union(*(_attributes_read(p) for p in readers))
    unread = [f.name for f in dataclasses.fields(BuildOptions) if f.name not in read]
    assert unread == []


def _steps(stderr: bytes) -> dict[str, str]:
    from tests.test_cache import steps

    return steps(stderr)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")
def test_no_cache_run_layers_runs_every_run_and_caches_the_rest(tmp_path, registry, busybox_image) -> None:
    dockerfile = f"FROM {busybox_image}\nCOPY app.txt /app.txt\nRUN cat /app.txt /app.txt > /twice\n"
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile, "app.txt": "v1"})
    cache = tmp_path / "cache"

    def build(*flags: str) -> dict[str, str]:
        proc = executor("-c", str(ctx), "--no-push", "--tar-path", str(tmp_path / "out.tar"), "--cache",
                        "--cache-repo", f"oci:{cache}", *flags, cwd=tmp_path)
        return _steps(proc.stderr)

    assert set(build("--cache-run-layers=false").values()) == {"built"}
    warm = build("--cache-run-layers=false")
    assert warm == {"COPY app.txt /app.txt": "cached", "RUN cat /app.txt /app.txt > /twice": "built"}
    # the RUN layer was never stored: a build that caches RUN layers misses it once, then hits
    assert build()["RUN cat /app.txt /app.txt > /twice"] == "built"
    assert set(build().values()) == {"cached"}
