"""The metadata steps on a config value, the way Kaniko's pkg/commands tests do (expose_test.go).

Expected values are BuildKit's rules, frontend/dockerfile/dockerfile2llb/convert.go and
convert_expose.go at moby/buildkit@73ed6825c4b7569379ef89df0aedcdbe64473d31 (dispatchEnv,
addEnv, dispatchLabel, dispatchCmd, dispatchEntrypoint, dispatchUser, dispatchVolume,
dispatchStopSignal, dispatchShell, dispatchOnbuild, dispatchMaintainer, dispatchExpose).
"""

from __future__ import annotations

import copy

import pytest

from pybuildless.builder.commands import step_for
from pybuildless.builder.commands.metadata import ExposeStep
from pybuildless.errors import DockerfileError
from tests.stepkit import expanded_step, instructions, stage

BASE = {"architecture": "amd64", "os": "linux", "config": {
    "Env": ["PATH=/usr/bin:/bin", "A=1"], "Cmd": ["/bin/inherited"], "Labels": {"base": "yes"},
    "ExposedPorts": {"443/tcp": {}}, "OnBuild": []}, "history": []}


def test_expose_adds_ports_to_the_config_value_tcp_by_default(tmp_path) -> None:
    run = stage(tmp_path, "FROM scratch\nEXPOSE 80 8080/udp 1000-1002/TCP 10.0.0.1:5000:53/udp\n", base=BASE, run=False)
    step = expanded_step(run, 0)
    before = copy.deepcopy(run.config)
    after = step.config_effect(run.config)
    assert run.config == before, "config_effect returns a new config and leaves its input alone"
    assert after["config"]["ExposedPorts"] == {p: {} for p in (
        "443/tcp", "80/tcp", "8080/udp", "1000/tcp", "1001/tcp", "1002/tcp", "53/udp")}
    assert step.execute(run.ctx).created_by == "EXPOSE 80/tcp 8080/udp 1000/tcp 1001/tcp 1002/tcp 53/udp"
    assert not step.touches_files and step.cache_key(run.ctx) is None


@pytest.mark.parametrize("port", ["80/xyz", "0", "70000", "9-3", "http"])
def test_expose_refuses_a_bad_port_naming_its_line(tmp_path, port) -> None:
    run = stage(tmp_path, f"FROM scratch\n\nEXPOSE {port}\n", run=False)
    step = expanded_step(run, 0)
    assert isinstance(step, ExposeStep)
    with pytest.raises(DockerfileError) as err:
        step.config_effect(run.config)
    assert err.value.line == 3 and port in str(err.value)


def test_env_replaces_in_place_and_appends(tmp_path) -> None:
    run = stage(tmp_path, "FROM scratch\nENV A=2 B=$A\n", base=BASE, run=False)
    step = expanded_step(run, 0)  # $A expands to the value before this instruction
    assert step.config_effect(run.config)["config"]["Env"] == ["PATH=/usr/bin:/bin", "A=2", "B=1"]
    outcome = step.execute(run.ctx)
    assert run.container["Env"] == ["PATH=/usr/bin:/bin", "A=2", "B=1"]
    assert outcome.created_by == "ENV A=2 B=1" and not outcome.snapshot


def test_label_merges_over_the_base_labels(tmp_path) -> None:
    run = stage(tmp_path, 'FROM scratch\nLABEL base=no "x y"=1\nLABEL x\\ y=2\n', base=BASE)
    assert run.container["Labels"] == {"base": "no", "x y": "2"}
    assert [o.created_by for o in run.outcomes] == ["LABEL base=no x y=1", "LABEL x y=2"]


def test_user_sets_the_user_verbatim(tmp_path) -> None:
    run = stage(tmp_path, "FROM scratch\nARG U=app\nUSER ${U}:staff\n")
    assert run.container["User"] == "app:staff"
    assert run.outcomes[1].created_by == "USER app:staff"
    unexpanded = step_for(instructions(run)[1]).config_effect(run.config)  # the scope expands, not the step
    assert unexpanded["config"]["User"] == "${U}:staff"


def test_cmd_uses_the_shell_in_effect_and_sets_args_escaped(tmp_path) -> None:
    run = stage(tmp_path, 'FROM scratch\nCMD echo one\nSHELL ["/bin/bash", "-eu", "-c"]\nCMD echo two\n', base=BASE)
    assert run.container["Cmd"] == ["/bin/bash", "-eu", "-c", "echo two"]
    assert run.container["ArgsEscaped"] is True
    assert run.container["Shell"] == ["/bin/bash", "-eu", "-c"]
    assert run.outcomes[0].created_by == 'CMD ["/bin/sh", "-c", "echo one"]'
    assert run.outcomes[1].created_by == 'SHELL ["/bin/bash", "-eu", "-c"]'
    assert run.ctx.stage.cmd_set


def test_entrypoint_drops_an_inherited_cmd(tmp_path) -> None:
    run = stage(tmp_path, 'FROM scratch\nENTRYPOINT ["/app", "--serve"]\n', base=BASE)
    assert run.container["Entrypoint"] == ["/app", "--serve"]
    assert run.container["Cmd"] is None
    assert run.outcomes[0].created_by == 'ENTRYPOINT ["/app", "--serve"]'


def test_entrypoint_keeps_a_cmd_set_in_the_same_stage(tmp_path) -> None:
    run = stage(tmp_path, 'FROM scratch\nCMD ["--port", "80"]\nENTRYPOINT /app\n', base=BASE)
    assert run.container["Cmd"] == ["--port", "80"]
    assert run.container["Entrypoint"] == ["/bin/sh", "-c", "/app"]


def test_empty_entrypoint_clears_it(tmp_path) -> None:
    base = copy.deepcopy(BASE)
    base["config"]["Entrypoint"] = ["/old"]
    run = stage(tmp_path, "FROM scratch\nENTRYPOINT []\n", base=base)
    assert run.container["Entrypoint"] is None and run.container["Cmd"] is None


def test_volume_adds_paths(tmp_path) -> None:
    run = stage(tmp_path, 'FROM scratch\nVOLUME /data /logs\nVOLUME ["/cache", "/logs"]\n')
    assert run.container["Volumes"] == {"/data": {}, "/logs": {}, "/cache": {}}
    assert run.outcomes[1].created_by == 'VOLUME ["/cache", "/logs"]'


@pytest.mark.parametrize("signal", ["SIGKILL", "TERM", "9", "SIGRTMIN+3"])
def test_stopsignal_keeps_a_valid_signal_as_written(tmp_path, signal) -> None:
    run = stage(tmp_path, f"FROM scratch\nSTOPSIGNAL {signal}\n")
    assert run.container["StopSignal"] == signal


@pytest.mark.parametrize("signal", ["SIGFOO", "0", "65"])
def test_stopsignal_refuses_an_unknown_signal(tmp_path, signal) -> None:
    run = stage(tmp_path, f"FROM scratch\nSTOPSIGNAL {signal}\n", run=False)
    with pytest.raises(DockerfileError, match="invalid STOPSIGNAL"):
        expanded_step(run, 0).config_effect(run.config)


def test_healthcheck_sets_the_check_with_only_the_given_durations(tmp_path) -> None:
    run = stage(tmp_path, "FROM scratch\nHEALTHCHECK --interval=5s --retries=3 CMD wget -q localhost\n")
    assert run.container["Healthcheck"] == {"Test": ["CMD-SHELL", "wget -q localhost"],
                                            "Interval": 5_000_000_000, "Retries": 3}
    none = stage(tmp_path / "none", "FROM scratch\nHEALTHCHECK NONE\n")
    assert none.container["Healthcheck"] == {"Test": ["NONE"]}


def test_onbuild_appends_the_trigger_text(tmp_path) -> None:
    run = stage(tmp_path, "FROM scratch\nONBUILD RUN one\nONBUILD COPY . /src\n", base=BASE)
    assert run.container["OnBuild"] == ["RUN one", "COPY . /src"]
    assert run.outcomes[1].created_by == "ONBUILD COPY . /src"


def test_maintainer_sets_the_image_author(tmp_path) -> None:
    run = stage(tmp_path, "FROM scratch\nMAINTAINER Jane Doe <jane@example.com>\n", base=BASE)
    assert run.config["author"] == "Jane Doe <jane@example.com>"
    assert "author" not in run.container


def test_arg_changes_the_scope_not_the_config(tmp_path) -> None:
    run = stage(tmp_path, "FROM scratch\nARG A=x B\n", base=BASE, run=False)
    before = copy.deepcopy(run.config)
    step = expanded_step(run, 0)
    assert step.config_effect(run.config) == before
    assert step.execute(run.ctx).created_by == "ARG A=x B"
    assert run.config == before
    assert run.ctx.vars.expansion_env()["A"] == "x" and "A=x" not in run.container["Env"]
