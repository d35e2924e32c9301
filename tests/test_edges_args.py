"""ARG scoping at its edges (found by mutation testing of dockerfile/args.py). Rules from BuildKit's
dockerfile2llb/convert.go (buildMetaArgs, dispatchArg) and instructions/commands.go
(ArgCommand.Expand), as vendored in moby@b985e231."""

from __future__ import annotations

import pytest

from pybuildless.dockerfile.args import DEFAULT_PATH, GlobalArgs, StageEnv, platform_args
from pybuildless.dockerfile.parser import parse_dockerfile
from pybuildless.errors import DockerfileError


def stage_scope(text: str, build_args=None, platform="linux/amd64"):
    df = parse_dockerfile(text)
    glob = GlobalArgs.resolve(df.meta_args, build_args or {}, platform_args(platform))
    scope = StageEnv(glob, build_args or {})
    return df, glob, scope, [scope.apply(i) for i in df.stages[0].instructions]


@pytest.mark.parametrize("bad", ["linux", "linux/", "/amd64", "linux//v7", ""])
def test_platform_needs_os_and_arch(bad):
    with pytest.raises(ValueError, match=rf"invalid platform {bad!r} \(expected os/arch\[/variant\]\)"):
        platform_args(bad)


def test_platform_args_default_to_linux_amd64_for_target_and_build():
    assert platform_args() == {
        "TARGETPLATFORM": "linux/amd64", "TARGETOS": "linux", "TARGETARCH": "amd64", "TARGETVARIANT": "",
        "BUILDPLATFORM": "linux/amd64", "BUILDOS": "linux", "BUILDARCH": "amd64", "BUILDVARIANT": ""}
    both = platform_args("linux/arm/v7", "linux/arm64")
    assert (both["TARGETPLATFORM"], both["TARGETVARIANT"], both["BUILDPLATFORM"], both["BUILDVARIANT"]) == (
        "linux/arm/v7", "v7", "linux/arm64", "")


def test_escape_directive_applies_to_arg_values():
    """With ``# escape=`` a backtick, ``\\`` is literal and a backtick escapes ``$``."""
    text = "# escape=`\nARG M=`$NOT\nARG P=C:\\dir\nFROM s\nARG S=`$NOT\nARG Q=C:\\dir\n"
    df, glob, scope, applied = stage_scope(text)
    assert glob.values["M"] == "$NOT" and glob.values["P"] == "C:\\dir"
    assert applied[0].pairs == (("S", "$NOT"),) and applied[1].pairs == (("Q", "C:\\dir"),)


def test_expansion_errors_name_the_instruction_and_the_message():
    with pytest.raises(DockerfileError, match=r"^Dockerfile:2: .*UNSET: must be set$"):
        stage_scope('FROM s\nARG A="${UNSET:?must be set}"\n')
    with pytest.raises(DockerfileError, match=r"^Dockerfile:1: .*UNSET: must be set$"):
        stage_scope('ARG A="${UNSET:?must be set}"\nFROM s\n')


def test_meta_arg_without_value_is_unset_not_empty():
    """buildMetaArgs adds a meta ARG to the scope only when it has a value: ``${U-x}`` sees it unset."""
    df, glob, scope, applied = stage_scope("ARG U\nFROM img${U-fallback}\nARG U\nRUN true\n")
    assert df.stages[0].from_.expand(glob.env).image == "imgfallback"
    assert "U" not in scope.run_env() and scope.arg_history() == []


def test_meta_arg_names_are_not_expanded_but_stage_arg_names_are():
    """buildMetaArgs uses kp.Key as written; in a stage, ArgCommand.Expand expands the key too."""
    df, glob, scope, applied = stage_scope("ARG N=FOO\nARG ${N}=meta\nFROM s\nARG N=BAR\nARG ${N}=stage\n")
    assert glob.values.get("FOO") is None and glob.values["${N}"] == "meta"
    assert applied[1].pairs == (("BAR", "stage"),) and scope.run_env()["BAR"] == "stage"


def test_applied_arg_carries_its_resolved_pairs():
    df, glob, scope, applied = stage_scope("ARG G=global\nFROM s\nARG A=${G:-x}y B G\n", {"B": "cli"})
    assert applied[0].pairs == (("A", "xy"), ("B", "cli"), ("G", "global"))


def test_image_env_values_may_hold_equals_signs():
    scope = StageEnv(GlobalArgs({}), {}, image_env=["OPTS=a=b=c", "EMPTY="])
    assert scope.expansion_env()["OPTS"] == "a=b=c" and scope.expansion_env()["EMPTY"] == ""
    assert scope.image_env() == ["OPTS=a=b=c", "EMPTY=", f"PATH={DEFAULT_PATH}"]


def test_child_stage_keeps_globals_args_and_env():
    """A stage FROM another starts from its parent's state: ENV, declared ARG values, and the
    same global scope for ``ARG NAME`` re-imports; PATH is always set."""
    df = parse_dockerfile("ARG G=global\nFROM s AS parent\nENV E=env\nARG X=1\nFROM parent\nARG X\nARG G\n")
    glob = GlobalArgs.resolve(df.meta_args, {}, platform_args())
    parent = StageEnv(glob, {})
    for inst in df.stages[0].instructions:
        parent.apply(inst)
    child = parent.child()
    applied = [child.apply(i) for i in df.stages[1].instructions]
    assert applied[0].pairs == (("X", "1"),) and applied[1].pairs == (("G", "global"),)
    assert child.image_env() == parent.image_env() == [f"PATH={DEFAULT_PATH}", "E=env"]
    # an explicit config without PATH still gets one, as BuildKit sets it for every stage
    assert child.child(image_env=["A=1"]).image_env() == ["A=1", f"PATH={DEFAULT_PATH}"]


def test_redeclared_arg_without_value_keeps_the_stage_value():
    df, glob, scope, applied = stage_scope("FROM s\nARG A=first\nARG A\nRUN true\n")
    assert applied[1].pairs == (("A", "first"),) and scope.run_env()["A"] == "first"
