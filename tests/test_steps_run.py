"""The RUN step without running anything: its cache key, its (absent) config effect and the
checks made before a sandbox is opened.

BuildKit's rules at moby/buildkit@73ed6825c4b7569379ef89df0aedcdbe64473d31,
frontend/dockerfile/dockerfile2llb/convert.go dispatchRun: a shell-form command runs as
``SHELL`` + the text (``withShell``); the step's environment is the stage's ENV plus declared
ARGs with values; user, working directory and network mode are part of the operation (and
so of its cache key); a secret mount's value never is (solver/llbsolver/ops/exec.go keys on
mount definitions only).
"""

from __future__ import annotations

import copy

from pybuildless.builder.commands.run import RunStep
from tests.stepkit import execute, expanded_step, instructions, stage


def _run_step(tmp_path, text: str):
    """The stage's last instruction (a RUN) as a step, after the ones before it ran."""
    run = stage(tmp_path, text, run=False)
    body = instructions(run)
    for instruction in body[:-1]:
        execute(run, instruction)
    step = expanded_step(run, len(body) - 1)
    assert isinstance(step, RunStep) and step.touches_files
    return run, step


def test_run_cache_key_has_the_command_env_user_and_workdir(tmp_path) -> None:
    run, step = _run_step(tmp_path, "FROM scratch\nENV B=2\nARG A=1\nWORKDIR /w\nUSER 7\nRUN echo $A\n")
    key = step.cache_key(run.ctx)
    assert key[:4] == ["RUN", "/bin/sh", "-c", "echo $A"]
    env = [p for p in key if "=" in p and not p.startswith(("user=", "workdir=", "network="))]
    assert env == sorted(env) and {"A=1", "B=2"} <= set(env)
    assert key[-3:] == ["user=7", "workdir=/w", "network=None"]


def test_run_cache_key_changes_with_what_decides_the_result(tmp_path) -> None:
    base = "FROM scratch\nENV V=1\nRUN make\n"
    variants = [base, base.replace("V=1", "V=2"), base.replace("RUN make", "RUN --network=none make"),
                base.replace("RUN make", 'RUN ["make"]'), "FROM scratch\nENV V=1\nUSER 1\nRUN make\n",
                'FROM scratch\nENV V=1\nSHELL ["/bin/bash", "-c"]\nRUN make\n']
    keys = []
    for n, text in enumerate(variants):
        run, step = _run_step(tmp_path / f"v{n}", text)
        keys.append(tuple(step.cache_key(run.ctx)))
    assert len(set(keys)) == len(keys), keys
    run, step = _run_step(tmp_path / "again", base)
    assert tuple(step.cache_key(run.ctx)) == keys[0], "the same inputs give the same key"


def test_run_cache_key_names_a_secret_never_its_value(tmp_path) -> None:
    (tmp_path / "token").write_text("s3cr3t-value")
    text = "FROM scratch\nRUN --mount=type=secret,id=tok,env=TOKEN use-it\n"
    run, step = _run_step(tmp_path, text)
    key = step.cache_key(run.ctx)
    assert any(p.startswith("mount=secret,id=tok,") and "env=TOKEN" in p for p in key)
    assert not any("s3cr3t" in p for p in key)


def test_run_leaves_the_config_alone(tmp_path) -> None:
    run, step = _run_step(tmp_path, "FROM scratch\nCMD x\nRUN touch /f\n")
    before = copy.deepcopy(run.config)
    assert step.config_effect(run.config) == before


def test_run_cache_key_has_a_heredoc_body(tmp_path) -> None:
    text = "FROM scratch\nRUN <<EOF\necho one\nEOF\n"
    run, step = _run_step(tmp_path / "one", text)
    other_run, other = _run_step(tmp_path / "two", text.replace("one", "two"))
    key, other_key = step.cache_key(run.ctx), other.cache_key(other_run.ctx)
    assert key[:3] == ["RUN", "/bin/sh", "-c"] and "echo one" in key[3]
    assert key != other_key
