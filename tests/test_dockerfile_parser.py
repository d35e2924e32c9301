"""Lexical layer, instruction parsing, heredocs, flags and error locations."""

from __future__ import annotations

import io

import pytest
from dockerfile_parse import DockerfileParser

from pybuildless.dockerfile import instructions as ins
from pybuildless.dockerfile.parser import load_dockerfile, parse_dockerfile, parse_onbuild_triggers
from pybuildless.errors import DockerfileError


def body(text: str):
    return parse_dockerfile(text).stages[-1].instructions


def only(text: str):
    (inst,) = body("FROM scratch\n" + text)
    return inst


def test_bom_crlf_and_lowercase_keywords():
    df = parse_dockerfile("\ufefffrom busybox\r\nrun echo hi\r\n")
    assert df.stages[0].from_.image == "busybox"
    assert only("run echo hi").command == ins.CommandLine(("echo hi",), False)


def test_continuation_keeps_next_line_indent_and_skips_comments_and_blank_lines():
    df = parse_dockerfile("FROM s\nRUN echo a \\  \n    b \\\n# comment\n\n   c\nUSER u\n")
    run, user = df.stages[0].instructions
    assert run.command.args == ("echo a     b    c",)
    assert (run.line, run.end_line) == (2, 6)
    assert user.line == 7
    assert any("empty continuation" in w for w in df.warnings)


def test_escaped_escape_is_not_a_continuation_and_eof_continuation_is_allowed():
    first, second = body("FROM s\nRUN echo \\\\\nRUN next \\")
    assert first.command.args == ("echo \\\\",)
    assert second.command.args == ("next",)


def test_testfile_line_spans():
    text = (
        "# ESCAPE=\\\n\nFROM brimstone/ubuntu:14.04\n\n\n# TORUN -v /var/run/docker.sock:/var/run/docker.sock\n"
        "\nENV GOPATH \\\n/go\n\n\n\n"
        "# Install the packages we need, clean up after them and us\nRUN apt-get update \\\n"
        "\t&& dpkg -l | awk '/^ii/ {print $2}' > /tmp/dpkg.clean \\\n\n\n"
        "    && apt-get install -y --no-install-recommends git golang ca-certificates \\\n"
        "    && apt-get clean \\\n    && rm -rf /var/lib/apt/lists \\\n\n"
        "\t&& go get -v github.com/brimstone/consuldock \\\n"
        "    && mv $GOPATH/bin/consuldock /usr/local/bin/consuldock \\\n\n"
        "\t&& dpkg -l | awk '/^ii/ {print $2}' > /tmp/dpkg.dirty \\\n"
        "\t&& apt-get remove --purge -y $(diff /tmp/dpkg.clean /tmp/dpkg.dirty | awk '/^>/ {print $2}') \\\n"
        "\t&& rm /tmp/dpkg.* \\\n\t&& rm -rf $GOPATH\n"
    )
    df = parse_dockerfile(text)
    spans = [(df.stages[0].from_.line, df.stages[0].from_.end_line)]
    spans += [(i.line, i.end_line) for i in df.stages[0].instructions]
    # Comment and blank lines inside the continuation count towards the span.
    assert spans == [(3, 3), (8, 9), (14, text.count("\n"))]


def test_directives_escape_check_syntax_and_scan_stop():
    df = parse_dockerfile("# syntax=docker/dockerfile:1\n# check=skip=all\n# escape=`\nFROM s\nRUN a `\n b\n")
    assert (df.directives.syntax, df.directives.check, df.escape) == ("docker/dockerfile:1", "skip=all", "`")
    assert df.stages[0].instructions[0].command.args == ("a  b",)
    # After a plain comment (or a blank line), "# escape=" is only a comment.
    for prefix in ("# hello\n", "\n"):
        assert parse_dockerfile(prefix + "# escape=`\nFROM s\n").escape == "\\"
    with pytest.raises(DockerfileError, match=r"Dockerfile:2: only one escape parser directive"):
        parse_dockerfile("# escape=`\n# escape=\\\nFROM s\n")


@pytest.mark.parametrize(
    ("args", "expected", "json"),
    [
        ('["echo", "a b"]', ("echo", "a b"), True),
        ("[]", (), True),
        ("['echo','single quotes are invalid JSON']", ("['echo','single quotes are invalid JSON']",), False),
        ('["echo", "unterminated]', ('["echo", "unterminated]',), False),
        # text after the array is ignored (json.Decoder in BuildKit v0.8's parseJSON, Docker 20.10)
        ('[ "a" ] extra', ("a",), True),
        ("echo hi", ("echo hi",), False),
    ],
)
def test_exec_vs_shell_form(args, expected, json):
    cmd = only(f"CMD {args}")
    assert cmd.command == ins.CommandLine(expected, json)
    assert cmd.command.argv(("/bin/sh", "-c")) == (list(expected) if json else ["/bin/sh", "-c", *expected])


def test_nested_json_is_an_error_with_line():
    with pytest.raises(DockerfileError, match=r"Dockerfile:3: .*JSON array must contain only strings"):
        parse_dockerfile('FROM s\n\nCMD [ "a", ["b"] ]\n')


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("COPY --mount=x a b", "unknown flag: mount"),
        ("RUN --chown=1 true", "unknown flag: chown"),
        ("COPY --chown a b", "missing a value on flag: chown"),
        ("COPY --link=maybe a b", "expecting boolean value for flag link"),
        ("COPY --from=a --from=b x y", "duplicate flag specified: from"),
        ("USER --x=1 me", "unknown flag: x"),
        ("RUN --network=bridge true", "unsupported network mode"),
        ("RUN --mount=type=nope,target=/x true", "unsupported mount type"),
        ("RUN --mount=type=cache,target=/x,bogus=1 true", "unexpected key 'bogus'"),
        ("RUN --mount=type=bind true", "requires a target"),
        ("COPY --from=$X a b", "variable expansion is not supported for --from"),
        ("RUN --mount=from=$X,target=/x true", "variable expansion is not supported for --mount=from"),
        ("FOO bar", "unknown instruction: FOO"),
        ("ENV X", "ENV must have two arguments"),
        ("ENV A=1 B", "can't find = in 'B'"),
        ("ARG =x", "ARG names can not be blank"),
        ("SHELL /bin/bash -c", "SHELL requires the arguments to be in JSON form"),
        ("COPY onlyone", "COPY requires at least two arguments"),
        ("COPY a <<EOF\nx\nEOF", "cannot accept a heredoc as a destination"),
        ("HEALTHCHECK CONNECT TCP", "Unknown type"),
        ("HEALTHCHECK --interval=1us CMD true", "cannot be less than 1ms"),
        ("HEALTHCHECK --retries=-1 CMD true", "cannot be negative"),
        ("HEALTHCHECK NONE extra", "takes no arguments"),
        ("ONBUILD ONBUILD RUN x", "Chaining ONBUILD"),
        ("ONBUILD FROM x", "isn't allowed as an ONBUILD trigger"),
        ("ONBUILD MAINTAINER x", "isn't allowed as an ONBUILD trigger"),
        ("RUN <<EOF\nno end", "unterminated heredoc"),
        ("ADD --checksum=sha256:0 a b /d/", "checksum can't be specified for multiple sources"),
    ],
)
def test_errors_name_file_and_line(line, message):
    with pytest.raises(DockerfileError) as info:
        parse_dockerfile("FROM s\n# pad\n" + line + "\n", path="ctx/build.Dockerfile")
    assert info.value.path == "ctx/build.Dockerfile"
    assert info.value.line == 3
    assert message in str(info.value)
    assert str(info.value).startswith("ctx/build.Dockerfile:3: ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "file with no instructions"),
        ("# only\n# comments\n", "file with no instructions"),
        ("ARG A\n", "no FROM"),
        ("RUN x\nFROM s\n", "before the first FROM"),
        ("FROM a b\n", "FROM requires either one or three arguments"),
        ("FROM a AS 1x\n", "invalid name for build stage"),
        ("FROM a AS x\nFROM b AS X\n", "duplicate stage name"),
    ],
)
def test_file_level_errors(text, message):
    with pytest.raises(DockerfileError, match=message):
        parse_dockerfile(text)


def test_flags_parsed_and_typed():
    copy = only("COPY --from=Build --chown=app:app --chmod=0755 --link --parents --exclude=*.md --exclude=x a b /d/")
    assert (copy.from_, copy.chown, copy.chmod, copy.link, copy.parents) == ("Build", "app:app", "0755", True, True)
    assert copy.excludes == ("*.md", "x") and copy.sources == ("a", "b") and copy.dest == "/d/"
    add = only("ADD --keep-git-dir=true --checksum=sha256:ab --unpack=false https://x/y.tgz /d")
    assert (add.keep_git_dir, add.checksum, add.unpack) == (True, "sha256:ab", False)
    run = only("RUN --mount=type=secret,id=tok --mount=type=cache,target=/c,sharing=locked --network=none -- echo")
    mounts = run.expanded_mounts({})
    assert mounts[0].target == "/run/secrets/tok" and mounts[0].readonly
    assert mounts[1].id == "/c" and mounts[1].sharing == "locked" and not mounts[1].readonly
    assert run.network == "none" and run.command.args == ("echo",)
    frm = parse_dockerfile("FROM --platform=$BUILDPLATFORM golang AS Build\n").stages[0].from_
    assert (frm.platform, frm.name) == ("$BUILDPLATFORM", "build")
    assert frm.expand({"BUILDPLATFORM": "linux/arm64"}).platform == "linux/arm64"


def test_mount_values_expand_except_from():
    run = only("RUN --mount=type=bind,from=builder,source=$SRC,target=$DST true")
    (mount,) = run.expanded_mounts({"SRC": "/out", "DST": "/in"})
    assert (mount.from_, mount.source, mount.target) == ("builder", "/out", "/in")


def test_heredocs_run_copy_and_quoting():
    df = parse_dockerfile(
        "FROM s\nRUN <<EOF\n#!/bin/sh\necho $X\nEOF\nRUN <<A cat > a && <<-'B' cat > b\nx\nA\n\tq\n\tB\n"
        "COPY <<one <<\"two\" /dest/\n$X\none\n$X\ntwo\nRUN python3 <<EOF\nprint(1)\nEOF\nUSER <<INVALID\n"
    )
    script, double, copy, python, user = df.stages[0].instructions
    assert script.resolve().argv == ("/dev/pipes/EOF",)
    assert script.resolve().files == (("/dev/pipes/EOF", "#!/bin/sh\necho $X\n", 0o755),)
    assert [(h.name, h.expand, h.chomp) for h in double.heredocs] == [("A", True, False), ("B", False, True)]
    assert double.resolve().argv[-1] == "<<A cat > a && <<-'B' cat > b\nx\nA\n\tq\nB"
    assert (double.line, double.end_line) == (6, 10)
    expanded = copy.expand({"X": "v"})
    assert [(s.name, s.data) for s in expanded.inline] == [("one", "v\n"), ("two", "$X\n")]
    assert python.resolve(("/bin/bash", "-c")).argv == ("/bin/bash", "-c", "python3 <<EOF\nprint(1)\nEOF")
    assert user.value == "<<INVALID"


def test_simple_heredoc_without_shebang_is_shell_script():
    (run,) = body("FROM s\nRUN <<-EOF\n\techo hi\n\tEOF\n")
    assert run.resolve(("/bin/sh", "-c")).argv == ("/bin/sh", "-c", "echo hi\n")


def test_env_label_arg_forms_and_same_instruction_rule():
    env = only("ENV abc=bye def=$abc")
    assert env.expand({"abc": "hi"}).pairs == (("abc", "bye"), ("def", "hi"))
    legacy = only("ENV ONE TWO= THREE=world")
    assert legacy.legacy and legacy.expand({}).pairs == (("ONE", "TWO= THREE=world"),)
    label = only('LABEL "com.x"="a b" single=\'$X\' k=$X')
    assert label.expand({"X": "1"}).pairs == (("com.x", "a b"), ("single", "$X"), ("k", "1"))
    arg = only('ARG a b=1 c="x y"')
    assert arg.pairs == (("a", None), ("b", "1"), ("c", '"x y"'))


def test_expose_volume_user_workdir_stopsignal_expand():
    df = parse_dockerfile(
        'FROM s\nEXPOSE $PORTS 53/udp\nVOLUME ["/data", "$D"]\nUSER $U:$G\nWORKDIR ${W:-/w}\nSTOPSIGNAL $S\n'
        "MAINTAINER $nobody\n"
    )
    env = {"PORTS": "80 443", "D": "/d", "U": "app", "G": "grp", "S": "SIGINT"}
    expose, volume, user, workdir, stop, maint = [i.expand(env) if hasattr(i, "expand") else i
                                                   for i in df.stages[0].instructions]  # fmt: skip
    assert expose.ports == ("80", "443", "53/udp")
    assert volume.paths == ("/data", "/d")
    assert (user.value, workdir.value, stop.value) == ("app:grp", "/w", "SIGINT")
    assert maint.author == "$nobody" and maint.as_label() == ("maintainer", "$nobody")
    with pytest.raises(DockerfileError, match="Dockerfile:3: VOLUME specified can not be an empty string"):
        df.stages[0].instructions[1].expand({})


def test_healthcheck_options():
    hc = only("HEALTHCHECK --interval=1m30s --timeout=5s --start-period=0 --start-interval=500ms --retries=3 "
              "CMD curl -f http://x/")  # fmt: skip
    assert hc.test == ("CMD-SHELL", "curl -f http://x/")
    assert (hc.interval, hc.timeout, hc.start_period, hc.start_interval, hc.retries) == (
        90 * 10**9, 5 * 10**9, 0, 500 * 10**6, 3)  # fmt: skip
    assert only('HEALTHCHECK CMD ["true"]').test == ("CMD", "true")
    assert only("HEALTHCHECK none").test == ("NONE",)


def test_run_cmd_entrypoint_shell_never_expand():
    for line in ("RUN echo $X", "CMD echo $X", "ENTRYPOINT echo $X", 'SHELL ["$X"]', "HEALTHCHECK CMD $X"):
        assert not hasattr(only(line), "expand")


def test_onbuild_stored_and_replayed_with_downstream_escape():
    df = parse_dockerfile("FROM s\nONBUILD COPY --chown=1 <<EOF /x\nhi\nEOF\nonbuild run echo `\n")
    first, second = df.stages[0].instructions
    assert first.trigger == "COPY --chown=1 <<EOF /x\nhi\nEOF"
    assert second.trigger == "run echo `"
    copy, run = parse_onbuild_triggers([first.trigger, "RUN echo `\n  hi"], escape="`")
    assert isinstance(copy, ins.Copy) and copy.inline[0].data == "hi\n" and copy.chown == "1"
    assert run.command.args == ("echo   hi",)
    with pytest.raises(DockerfileError, match="ONBUILD trigger 2.*isn't allowed"):
        parse_onbuild_triggers(["RUN ok", "FROM x"])
    with pytest.raises(DockerfileError, match="Chaining ONBUILD"):
        parse_onbuild_triggers(["ONBUILD RUN x"])


def test_load_dockerfile_from_path_and_stdin(tmp_path, monkeypatch):
    path = tmp_path / "build.Dockerfile"
    path.write_text("FROM busybox\nRUN true\n")
    assert load_dockerfile(str(path)).stages[0].from_.image == "busybox"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"FROM alpine\n")))
    assert load_dockerfile("-").stages[0].from_.image == "alpine"
    with pytest.raises(DockerfileError, match="cannot read Dockerfile"):
        load_dockerfile(str(tmp_path / "missing"))


@pytest.mark.parametrize(
    "text",
    [
        "FROM busybox AS b\nrun echo a \\\n  && echo b\n# c\nCOPY a /b\n",
        "FROM x\nENV A=1 \\\n# inner comment\n    B=2\nLABEL a=b\r\nCMD [\"x\"]\n",
    ],
)
def test_agrees_with_dockerfile_parse_where_it_is_right(text):
    oracle = DockerfileParser(fileobj=io.BytesIO(text.encode()), env_replace=False)
    expected = [(s["instruction"], s["startline"] + 1, s["endline"] + 1, s["value"])
                for s in oracle.structure if s["instruction"] != "COMMENT"]  # fmt: skip
    df = parse_dockerfile(text)
    got = [(i.original.split()[0].upper(), i.line, i.end_line, i.original.split(None, 1)[1])
           for s in df.stages for i in (s.from_, *s.instructions)]  # fmt: skip
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    assert [" ".join(g[3].split()) for g in got] == [" ".join(e[3].split()) for e in expected]
