"""ARG/ENV scoping scenarios and the stage build plan."""

from __future__ import annotations

import pytest

from pybuildless.dockerfile import instructions as ins
from pybuildless.dockerfile.args import DEFAULT_PATH, GlobalArgs, StageEnv, platform_args, unused_build_args
from pybuildless.dockerfile.parser import parse_dockerfile
from pybuildless.dockerfile.stages import plan_build
from pybuildless.errors import DockerfileError


def run_stage(text: str, build_args=None, image_env=(), platform="linux/arm64/v8"):
    df = parse_dockerfile(text)
    build_args = build_args or {}
    glob = GlobalArgs.resolve(df.meta_args, build_args, platform_args(platform, "linux/amd64"))
    scopes, applied = [], []
    for stage in df.stages:
        base = stage.from_.expand(glob.env)
        parent = next((i for i, s in enumerate(df.stages[: stage.index]) if s.name == base.image), None)
        scope = scopes[parent].child() if parent is not None else StageEnv(glob, build_args, image_env)
        applied.append([scope.apply(i) for i in stage.instructions])
        scopes.append(scope)
    return df, glob, scopes, applied


def test_meta_args_only_in_from_and_reimport():
    text = 'ARG V=1\nARG IMG="base-$V"\nFROM $IMG\nLABEL a=$V\nARG V\nLABEL b=$V\n'
    df, glob, (scope,), (insts,) = run_stage(text)
    assert df.stages[0].from_.expand(glob.env).image == "base-1"
    assert insts[0].pairs == (("a", ""),)  # not visible before re-declaration
    assert insts[2].pairs == (("b", "1"),)


def test_build_arg_overrides_and_skips_default_expansion():
    text = "ARG A=$UNSET_FAILS\nARG B=${A}x\nFROM s\nARG A\nARG C=stage-$B\nARG B\nLABEL l=$A/$B/$C\n"
    _, glob, (scope,), (insts,) = run_stage(text, {"A": "cli"})
    assert glob.values["A"] == "cli" and glob.values["B"] == "clix"
    assert insts[-1].pairs == (("l", "cli/clix/stage-"),)
    # C's default was expanded before B was declared in the stage, so B was unset then.
    assert scope.expansion_env()["C"] == "stage-"


def test_precedence_build_arg_then_default_then_global():
    text = "ARG G=global\nFROM s\nARG G=stage\nARG H\nARG G2=x\nLABEL g=$G h=${H-unset}\n"
    *_, (insts,) = run_stage(text, {"G2": "cli"})
    assert insts[-1].pairs == (("g", "stage"), ("h", "unset"))
    *_, (insts,) = run_stage(text, {"G": "cli"})
    assert insts[-1].pairs == (("g", "cli"), ("h", "unset"))


def test_unset_vs_empty_in_run_env_and_never_in_image_env():
    _, _, (scope,), _ = run_stage("FROM s\nARG FOO\nARG BAR=\nENV E=1\n")
    run_env = scope.run_env()
    assert "FOO" not in run_env and run_env["BAR"] == ""
    assert scope.image_env() == [f"PATH={DEFAULT_PATH}", "E=1"]
    assert scope.arg_history() == ["BAR="]


def test_env_replaces_in_place_and_later_declaration_wins():
    _, _, (scope,), (insts,) = run_stage(
        "FROM s\nENV FOO=env\nARG FOO=arg\nLABEL a=$FOO\nENV FOO=env2 X=$FOO\n", image_env=["PATH=/p", "FOO=base"]
    )
    assert insts[2].pairs == (("a", "arg"),)
    assert insts[3].pairs == (("FOO", "env2"), ("X", "arg"))  # same-instruction rule
    assert scope.image_env() == ["PATH=/p", "FOO=env2", "X=arg"]
    assert scope.run_env()["FOO"] == "env2"


def test_platform_args_global_only_and_reimported():
    text = "FROM --platform=$BUILDPLATFORM s AS b\nLABEL t=${TARGETARCH:-none}\nARG TARGETARCH TARGETVARIANT\nLABEL t=$TARGETARCH/$TARGETVARIANT\n"
    df, glob, _, (insts,) = run_stage(text)
    assert df.stages[0].from_.expand(glob.env).platform == "linux/amd64"
    assert insts[0].pairs == (("t", "none"),)
    assert insts[2].pairs == (("t", "arm64/v8"),)
    assert glob.values["TARGETPLATFORM"] == "linux/arm64/v8" and glob.values["BUILDOS"] == "linux"


def test_child_stage_inherits_env_and_args_sibling_does_not():
    text = "FROM s AS base\nARG VERSION=2\nENV E=1\nFROM base AS child\nLABEL v=$VERSION e=$E\nFROM s AS other\nLABEL v=x$VERSION\n"
    *_, applied = run_stage(text)
    assert applied[1][0].pairs == (("v", "2"), ("e", "1"))
    assert applied[2][0].pairs == (("v", "x"),)


def test_proxy_args_reach_run_without_declaration():
    _, _, (scope,), _ = run_stage("FROM s\nRUN true\n", {"HTTP_PROXY": "http://p", "OTHER": "x"})
    assert scope.run_env()["HTTP_PROXY"] == "http://p" and "OTHER" not in scope.run_env()


def test_unused_build_args():
    df = parse_dockerfile("ARG M\nFROM s\nARG USED\nFROM s AS skipped\nARG LATER\n")
    bodies = [df.stages[0].instructions]
    assert unused_build_args(df.meta_args, bodies, ["M", "USED", "LATER", "typo", "HTTP_PROXY"]) == ["LATER", "typo"]


def test_expansion_errors_name_line():
    df = parse_dockerfile("FROM s\n\nWORKDIR ${MISSING:?must be set}\n")
    scope = StageEnv(GlobalArgs({}), {})
    with pytest.raises(DockerfileError, match=r"Dockerfile:3: .*MISSING: must be set"):
        scope.apply(df.stages[0].instructions[0])


def test_blank_from_is_an_error():
    df = parse_dockerfile("ARG IMG\nFROM $IMG\n")
    with pytest.raises(DockerfileError, match=r"Dockerfile:2: base name \(\$IMG\) should not be blank"):
        plan_build(df, meta_env=GlobalArgs.resolve(df.meta_args, {}).env)


GRAPH = """\
ARG VARIANT=alpine
FROM busybox AS base
FROM base-${VARIANT} AS unused-variant
FROM base AS tools
RUN --mount=type=cache,target=/c --mount=type=bind,from=base,target=/b true
FROM golang:1 AS gen
FROM scratch AS assets
COPY --from=nginx:1 /x /x
FROM tools AS final
COPY --from=gen /a /a
COPY --from=4 /b /b
FROM alpine AS Other
"""


def test_stage_graph_levels_and_pruning():
    df = parse_dockerfile(GRAPH)
    plan = plan_build(df, "FINAL", {"VARIANT": "alpine"})
    assert plan.target == 5 and plan.order == (0, 2, 3, 4, 5)
    assert plan.levels == ((0, 3, 4), (2,), (5,))
    assert plan.deps[5] == {2, 3, 4} and plan.deps[2] == {0}
    assert plan.images == {"busybox", "golang:1", "nginx:1"}
    assert plan.skipped(df) == [1, 6]
    assert plan.bases[4].is_scratch and plan.bases[2].stage == 0
    default = plan_build(df, None, {})
    assert default.order == (6,) and default.images == {"alpine"}


def test_from_with_meta_arg_resolves_to_stage():
    df = parse_dockerfile("ARG V=a\nFROM busybox AS base-a\nFROM base-${V}\n")
    plan = plan_build(df, None, GlobalArgs.resolve(df.meta_args, {}).env)
    assert plan.bases[1].stage == 0 and plan.order == (0, 1)
    plan = plan_build(df, None, GlobalArgs.resolve(df.meta_args, {"V": "b"}).env)
    assert plan.bases[1].image == "base-b" and plan.order == (1,)


@pytest.mark.parametrize(
    ("text", "target", "message"),
    [
        ("FROM a AS x\nFROM b\n", "nope", "target stage 'nope' could not be found; available stages: x"),
        ("FROM a AS t\nCOPY --from=1 /a /b\nFROM b\n", "t", "Dockerfile:2: invalid stage index 1"),
        ("FROM a AS t\nCOPY --from=later /a /b\nFROM b AS later\n", "t", "Dockerfile:2: stage 'later'"),
        ("FROM later AS t\nFROM b AS later\n", "t", "Dockerfile:1: stage 'later' is used before"),
    ],
)
def test_graph_errors(text, target, message):
    df = parse_dockerfile(text)
    with pytest.raises(DockerfileError, match=message):
        plan_build(df, target, {})


def test_copy_from_keeps_self_named_image_reference():
    df = parse_dockerfile("FROM nginx AS nginx\nCOPY --from=alpine:3 /a /a\n")
    plan = plan_build(df)
    assert plan.bases[0].image == "nginx" and plan.images == {"nginx", "alpine:3"}
    assert isinstance(df.stages[0].instructions[0], ins.Copy)
