"""Edge rules of the Dockerfile parser: error texts and lines, flags, ONBUILD triggers, HEALTHCHECK.

Expected values follow BuildKit: frontend/dockerfile/instructions/parse.go (instruction rules and
their messages), frontend/dockerfile/parser/parser.go (lines, directives) and
instructions/bflag.go (flag errors), moby/buildkit mirror HEAD.
"""

from __future__ import annotations

import io

import pytest

from pybuildless.dockerfile import instructions as ins
from pybuildless.dockerfile.parser import load_dockerfile, parse_dockerfile, parse_onbuild_triggers
from pybuildless.errors import DockerfileError


def error(text: str, path: str = "Dockerfile") -> str:
    with pytest.raises(DockerfileError) as info:
        parse_dockerfile(text, path)
    return str(info.value)


def trigger_error(triggers: list[str]) -> str:
    with pytest.raises(DockerfileError) as info:
        parse_onbuild_triggers(triggers)
    return str(info.value)


def only(text: str):
    (inst,) = parse_dockerfile("FROM scratch\n" + text, "df").stages[-1].instructions
    return inst


# -- HEALTHCHECK (parse.go parseHealthcheck) ----------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
        ("HEALTHCHECK --interval=1s NONE", "HEALTHCHECK NONE takes no arguments"),
        ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
        ("HEALTHCHECK FOO x", "Unknown type 'FOO' in HEALTHCHECK (try CMD)"),
        ("HEALTHCHECK --retries=x CMD a", "--retries: invalid number 'x'"),
        ("HEALTHCHECK --retries=-1 CMD a", "--retries cannot be negative (-1)"),
        ("HEALTHCHECK --start-period=1us CMD a", "Start-period '1us' cannot be less than 1ms"),
    ],
)
def test_healthcheck_errors_name_file_line_and_rule(line, message):
    """parse.go parseHealthcheck: each message, on the instruction's line (3 here)."""
    assert error(f"FROM s\n\n{line}\n") == f"Dockerfile:3: {message}"


def test_healthcheck_bad_duration_and_json_name_the_line():
    text = error("FROM s\nHEALTHCHECK --timeout=abc CMD a\n")
    assert text.startswith("Dockerfile:2: --timeout: ")
    text = error('FROM s\nHEALTHCHECK CMD ["a", 1]\n')
    assert text.startswith("Dockerfile:2: ") and len(text) > len("Dockerfile:2: ")


def test_healthcheck_values_and_zero_retries():
    """Retries default 0 and 0 is allowed (only negative is refused); 1ms exactly is the minimum."""
    hc = only("HEALTHCHECK --retries=0 --start-period=1ms --interval=2s CMD a b\n")
    assert hc.retries == 0 and hc.start_period == 1_000_000 and hc.interval == 2_000_000_000
    assert hc.test == ("CMD-SHELL", "a b") and hc.line == 2 and hc.path == "df"
    hc = only("HEALTHCHECK CMD a\n")
    assert hc.retries == 0
    assert (hc.interval, hc.timeout, hc.start_period, hc.start_interval) == (0, 0, 0, 0)
    none = only("HEALTHCHECK none\n")
    assert none.test == ("NONE",) and none.line == 2 and none.path == "df"


def test_healthcheck_zero_duration_is_allowed_and_all_flags_read():
    hc = only("HEALTHCHECK --interval=0s --timeout=3s --start-period=4s --start-interval=5s CMD [\"a\"]\n")
    assert hc.test == ("CMD", "a")
    assert (hc.interval, hc.timeout, hc.start_period, hc.start_interval) == (0, 3 * 10**9, 4 * 10**9, 5 * 10**9)


# -- RUN flags (parse.go parseRun, runnetwork.go, runsecurity.go) -------------------------


@pytest.mark.parametrize("network", ["default", "none", "host"])
def test_run_network_modes_accepted(network):
    assert only(f"RUN --network={network} a\n").network == network


@pytest.mark.parametrize("security", ["sandbox", "insecure"])
def test_run_security_modes_accepted(security):
    assert only(f"RUN --security={security} a\n").security == security


def test_run_bad_security_and_network_name_the_line():
    assert error("FROM s\nRUN --security=x a\n") == (
        "Dockerfile:2: unsupported security mode 'x' (use sandbox or insecure)"
    )
    assert error("FROM s\n\nRUN --network=bridge a\n").startswith("Dockerfile:3: ")


# -- flags (bflag.go) ---------------------------------------------------------------------


def test_flag_errors_name_file_and_line():
    assert error("FROM s\n\nCOPY --from a b\n", "x/Dockerfile") == "x/Dockerfile:3: missing a value on flag: from"
    assert error("FROM s\nCOPY --link= a b\n") == "Dockerfile:2: missing a value on flag: link"
    assert error("FROM s\nCOPY --bogus=1 a b\n") == "Dockerfile:2: unknown flag: bogus"


def test_copy_flags_default_and_set():
    plain = only("COPY a b\n")
    assert plain.link is False and plain.parents is False and plain.json is False
    linked = only('COPY --link --parents ["a", "b"]\n')
    assert linked.link is True and linked.parents is True and linked.json is True
    assert linked.sources == ("a",)


# -- argument counts and messages ---------------------------------------------------------


def test_argument_count_messages():
    """parse.go errAtLeastOneArgument / errAtLeastTwoArguments / errExactlyOneArgument."""
    assert error("FROM s\nMAINTAINER\n") == "Dockerfile:2: MAINTAINER requires exactly one argument"
    assert error("FROM s\nCOPY a\n") == "Dockerfile:2: COPY requires at least two arguments"
    assert error("FROM s\nLABEL\n") == "Dockerfile:2: LABEL requires at least one argument"
    assert error("FROM s\nENV =x\n") == "Dockerfile:2: ENV names can not be blank"


def test_maintainer_and_pairs_values():
    m = only("MAINTAINER me <me@x>\n")
    assert m.name == "me <me@x>" and m.line == 2 and m.path == "df"
    label = only("LABEL a=b=c\n")
    assert label.pairs == (("a", "b=c"),)


def test_copy_from_with_variable_is_refused_with_buildkit_text():
    assert error("FROM s\nCOPY --from=$X a b\n") == (
        "Dockerfile:2: variable expansion is not supported for --from, define a new stage with FROM "
        "using ARG from global scope as a workaround"
    )


# -- ONBUILD triggers (parse.go parseOnBuild) ----------------------------------------------


def test_onbuild_trigger_errors_name_the_trigger():
    assert trigger_error(["RUN a", "ONBUILD RUN b"]) == (
        "ONBUILD trigger 2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    )
    assert trigger_error(["MAINTAINER me"]) == "ONBUILD trigger 1: MAINTAINER isn't allowed as an ONBUILD trigger"
    assert trigger_error(["FROM x"]) == "ONBUILD trigger 1: FROM isn't allowed as an ONBUILD trigger"
    assert trigger_error(["RUN a\nRUN b"]) == "ONBUILD trigger 1: an ONBUILD trigger must hold exactly one instruction"
    assert trigger_error(["# only a comment"]).startswith("ONBUILD trigger 1:")


def test_onbuild_trigger_instruction_carries_the_trigger_path():
    (run,) = parse_onbuild_triggers(["RUN a"], path="base")
    assert run.path == "base trigger 1"
    with pytest.raises(DockerfileError) as info:
        parse_onbuild_triggers(["COPY a"], path="base")
    assert str(info.value).startswith("base trigger 1")


def test_onbuild_onbuild_in_dockerfile():
    assert error("FROM s\nONBUILD ONBUILD RUN a\n") == (
        "Dockerfile:2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    )


# -- stages -------------------------------------------------------------------------------


def test_stage_lookup_by_name_and_index():
    df = parse_dockerfile("FROM a AS One\nFROM b AS two\nFROM c\n")
    assert [s.index for s in df.stages] == [0, 1, 2]
    assert [s.name for s in df.stages] == ["one", "two", None]
    assert df.stages[0].from_.image == "a" and df.stages[2].instructions == ()
    assert df.stage_by_name_or_index("ONE").index == 0
    assert df.stage_by_name_or_index("two").index == 1
    assert df.stage_by_name_or_index("2").index == 2
    assert df.stage_by_name_or_index("3") is None
    assert df.stage_by_name_or_index("busybox") is None


def test_meta_args_kept():
    df = parse_dockerfile("ARG A=1\nARG B\nFROM s\n")
    assert [m.line for m in df.meta_args] == [1, 2]


# -- load_dockerfile ----------------------------------------------------------------------


def test_load_dockerfile_errors_and_name(tmp_path, monkeypatch):
    missing = tmp_path / "nope"
    with pytest.raises(DockerfileError) as info:
        load_dockerfile(str(missing))
    assert str(info.value) == f"{missing}: cannot read Dockerfile: No such file or directory"
    bad = tmp_path / "bad"
    bad.write_bytes(b"FROM s\n\xff\n")
    with pytest.raises(DockerfileError) as info:
        load_dockerfile(str(bad))
    assert str(info.value) == f"{bad}: not valid UTF-8 at byte 7"
    good = tmp_path / "Dockerfile"
    good.write_text("FROM s\nFOO x\n")
    with pytest.raises(DockerfileError) as info:
        load_dockerfile(str(good))
    assert str(info.value) == f"{good}:2: unknown instruction: FOO"


# -- more argument rules (parse.go errAtLeastOneArgument, errExactlyOneArgument) ----------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("VOLUME", "VOLUME requires at least one argument"),
        ("VOLUME []", "VOLUME requires at least one argument"),
        ("EXPOSE", "EXPOSE requires at least one argument"),
        ("ARG", "ARG requires at least one argument"),
        ("ARG =x", "ARG names can not be blank"),
        ("ENV", "ENV requires at least one argument"),
        ("SHELL []", "SHELL requires at least one argument"),
        ("SHELL sh -c", "SHELL requires the arguments to be in JSON form"),
        ("CMD", "CMD requires at least one argument"),
        ("ENTRYPOINT", "ENTRYPOINT requires at least one argument"),
        ("USER", "USER requires exactly one argument"),
        ("WORKDIR", "WORKDIR requires exactly one argument"),
        ("FROM a b", "FROM requires either one or three arguments"),
        ("ADD --checksum=sha256:00 a b c", "checksum can't be specified for multiple sources"),
    ],
)
def test_instruction_argument_errors(line, message):
    assert error(f"FROM s\n\n{line}\n") == f"Dockerfile:3: {message}"


def test_no_from_and_non_arg_before_from():
    assert error("ARG a\n", "x/Df") == "x/Df: no build stage: the Dockerfile has no FROM instruction"
    assert error("\nRUN a\nFROM s\n") == "Dockerfile:2: RUN before the first FROM: only ARG may precede FROM"


def test_parse_error_carries_the_source_text_for_the_excerpt():
    text = "FROM s\nUSER\n"
    with pytest.raises(DockerfileError) as info:
        parse_dockerfile(text, "df")
    assert info.value.source_text == text


def test_values_of_simple_instructions():
    shell = only('SHELL ["/bin/sh", "-c"]\n')
    assert shell.argv == ("/bin/sh", "-c") and shell.line == 2 and shell.path == "df"
    entry = only('ENTRYPOINT ["a"]\n')
    assert entry.command == ins.CommandLine(("a",), True) and entry.line == 2 and entry.path == "df"
    expose = only("EXPOSE 80 443/udp\n")
    assert expose.ports == ("80", "443/udp") and expose.line == 2 and expose.path == "df"
    volume = only("VOLUME /a /b\n")
    assert volume.paths == ("/a", "/b")
    arg = only("ARG a=1 b\n")
    assert arg.pairs == (("a", "1"), ("b", None)) and arg.line == 2 and arg.path == "df"
    assert only("LABEL a b c\n").legacy is True and only("LABEL a=b\n").legacy is False
    assert only("LABEL a b c\n").pairs == (("a", "b c"),)


def test_escape_directive_reaches_arg_and_env_word_splitting():
    """parser.go escape directive and instructions/parse.go parseWords: the escape char, not
    backslash, keeps an escaped space inside one ENV/ARG word; the word keeps its escape char
    (it is removed by word expansion at build time)."""
    stage = parse_dockerfile("# escape=`\nFROM s\nARG a=x` y\nENV b=p` q c=\\r\n", "df").stages[0]
    arg, env = stage.instructions
    assert arg.pairs == (("a", "x` y"),)
    assert env.pairs == (("b", "p` q"), ("c", "\\r"))
    (plain,) = parse_dockerfile("FROM s\nARG a=x` y\n").stages[0].instructions
    assert plain.pairs == (("a", "x`"), ("y", None))


def test_unlabelled_stage_has_no_name():
    assert parse_dockerfile("FROM a\n").stages[0].from_.name is None


# -- RUN --mount checked at parse time unless it holds variables (instructions/commands_runmount.go)


def test_mount_from_with_a_variable_is_refused():
    """dockerfile2llb/convert.go refuses a variable in COPY --from with this text; --mount=from is
    refused the same way (the stage it names must be known when the graph is built)."""
    assert error("FROM s\nRUN --mount=type=bind,from=$X,target=/a a\n") == (
        "Dockerfile:2: variable expansion is not supported for --mount=from, define a new stage "
        "with FROM using ARG from global scope as a workaround"
    )


def test_mount_with_variables_waits_for_expansion_and_plain_mount_is_checked_now():
    assert only("RUN --mount=type=$T,target=/a a\n").mounts == ("type=$T,target=/a",)
    assert error("FROM s\n\nRUN --mount=type=bind,target=/a,bogus=1 a\n") == (
        "Dockerfile:3: unexpected key 'bogus' in 'bogus=1'"
    )
    assert error("FROM s\nRUN --mount=type=bogus,target=/a a\n") == "Dockerfile:2: unsupported mount type 'bogus'"


def test_copy_mixes_heredoc_and_context_sources():
    """parse.go parseCopy / parser.go heredocs: only ``<<NAME`` sources take a heredoc body,
    other sources stay context paths; a JSON-form COPY has no heredocs."""
    copy = only("COPY <<EOF a /d\nbody\nEOF\n")
    assert copy.sources == ("a",) and copy.dest == "/d"
    assert copy.inline == (ins.HeredocSource("EOF", "body\n", True),)
    json_form = only('COPY ["<<EOF", "/d"]\n')
    assert json_form.sources == ("<<EOF",) and json_form.inline == () and json_form.json is True


def test_flag_errors_name_the_given_path():
    assert error("FROM s\nCOPY --link= a b\n", "sub/Df") == "sub/Df:2: missing a value on flag: link"
    assert error("FROM s\nCOPY --chown a b\n", "sub/Df") == "sub/Df:2: missing a value on flag: chown"


def test_load_dockerfile_from_stdin_is_named_stdin(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"FROM s\nFOO x\n")))
    with pytest.raises(DockerfileError) as info:
        load_dockerfile("-")
    assert str(info.value) == "<stdin>:2: unknown instruction: FOO"


def test_dockerfile_keeps_path_text_and_every_stage_body():
    text = "FROM a AS one\nRUN x\nFROM b AS two\nRUN y\n"
    df = parse_dockerfile(text, "sub/Df")
    assert df.path == "sub/Df" and df.text == text
    assert [s.name for s in df.stages] == ["one", "two"]
    assert [[i.command.args for i in s.instructions] for s in df.stages] == [[("x",)], [("y",)]]


def test_onbuild_instruction_and_triggers():
    """parse.go parseOnBuild: the trigger is the original text after ONBUILD, heredocs included."""
    onbuild = only("ONBUILD RUN <<A <<B\na\nA\nb\nB\n")
    assert onbuild.trigger == "RUN <<A <<B\na\nA\nb\nB"
    assert onbuild.line == 2 and onbuild.path == "df"
    assert error("FROM s\nONBUILD\n") == "Dockerfile:2: ONBUILD requires at least one argument"
    (env,) = parse_onbuild_triggers(["ENV a=x` y"], escape="`")
    assert env.pairs == (("a", "x` y"),)


def test_error_in_a_one_line_trigger_is_on_its_first_line():
    """convert.go initOnBuildTriggers parses each trigger text on its own
    (parser.Parse(strings.NewReader(trigger))): nothing precedes the trigger's first line."""
    assert trigger_error(["COPY a"]) == "ONBUILD trigger 1:1: COPY requires at least two arguments"


def test_error_in_a_one_line_trigger_is_on_its_first_line_with_a_backtick_escape():
    with pytest.raises(DockerfileError) as info:
        parse_onbuild_triggers(["COPY a"], escape="`")
    assert str(info.value) == "ONBUILD trigger 1:1: COPY requires at least two arguments"


def test_trigger_line_span_is_the_same_under_either_escape():
    """The escape char changes how a trigger splits, never where its lines are counted from."""
    trigger = "COPY <<EOF /x\nhi\nEOF"
    for escape in ("\\", "`"):
        (copy,) = parse_onbuild_triggers([trigger], escape=escape)
        assert (copy.line, copy.end_line, copy.escape) == (1, 3, escape)
    (run,) = parse_onbuild_triggers(["RUN a `\n  b"], escape="`")
    assert (run.line, run.end_line, run.command.args) == (1, 2, ("a   b",))


def test_healthcheck_json_error_is_the_same_as_for_cmd():
    """HEALTHCHECK CMD takes its command like CMD (parse.go parseHealthcheck calls the same
    JSON-or-shell parsing), so a bad array is reported with the same text."""
    cmd = error('FROM s\nCMD ["a", 1]\n')
    assert error('FROM s\nHEALTHCHECK CMD ["a", 1]\n') == cmd
    assert cmd.startswith("Dockerfile:2: ") and "None" not in cmd


def test_a_context_source_before_a_heredoc_source_stays_a_path():
    """parse.go parseCopy: each ``<<NAME`` source takes the next heredoc body wherever it stands;
    a plain source before it is a context path and takes none."""
    copy = only("COPY a <<EOF b /d\nbody\nEOF\n")
    assert copy.sources == ("a", "b") and copy.dest == "/d"
    assert copy.inline == (ins.HeredocSource("EOF", "body\n", True),)


def test_triggers_default_to_the_backslash_escape():
    """The Dockerfile escape character is ``\\`` unless a directive says otherwise (Dockerfile
    reference, "escape" parser directive)."""
    (run,) = parse_onbuild_triggers(["RUN a \\\n  b"])
    assert (run.escape, run.line, run.end_line, run.command.args) == ("\\", 1, 2, ("a   b",))
