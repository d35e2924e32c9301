"""RUN: execute a command in the stage root through the sandbox; the whole root is then walked
(or, on an overlay, only what the upper dir holds; a stage root that is itself an overlay
stacks that upper dir rather than copying it, ``builder.stageroot.upper_keeper``)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Any, ClassVar

from pybuildless.builder import imageconfig, platforms, stageroot
from pybuildless.builder.commands import runmounts
from pybuildless.builder.commands.outcome import Outcome
from pybuildless.builder.commands.step import StepContext
from pybuildless.builder.commands.workdir import make_dirs
from pybuildless.dockerfile import instructions as ins
from pybuildless.errors import BuildError
from pybuildless.fs import inroot
from pybuildless.fs.users import resolve_user

# Heredoc scripts with a shebang are run as files; BuildKit puts them under
# /dev/pipes, which our /dev mount would hide, so they live here for the step.
SCRIPT_DIR = "/.pybuildless-run"


def _write_scripts(st, resolved: ins.ResolvedRun) -> tuple[list[str], str | None]:
    argv = list(resolved.argv)
    if not resolved.files:
        return argv, None
    inroot.makedirs(st.root, SCRIPT_DIR)
    host_dir = inroot.resolve(st.root, SCRIPT_DIR)
    for path, content, mode in resolved.files:
        name = os.path.basename(path)
        # a link an earlier step left there is replaced, never written through
        inroot.write_file(st.root, f"{SCRIPT_DIR}/{name}", content.encode(), mode)
        argv = [f"{SCRIPT_DIR}/{name}" if a == path else a for a in argv]
    return argv, str(host_dir)


def run(i: ins.Run, st) -> Outcome:
    network = i.network or "default"
    if network not in ("default", "none", "host"):
        raise i.error(f"invalid --network={network!r}: expected default, none or host")
    platform = st.platform
    if platform is not None and not platforms.can_run(platform):
        raise platforms.foreign_run_error(i, platforms.stage_label(st.stage.name, st.stage.index), platform)
    resolved = i.resolve(st.shell)
    env = st.vars.run_env()
    user = resolve_user(st.root, st.user)
    env.setdefault("PATH", imageconfig.DEFAULT_PATH)
    env.setdefault("HOME", user.home or "/")
    cwd = st.workdir
    made = make_dirs(st, cwd)
    argv, scripts = _write_scripts(st, resolved)
    prepared = runmounts.prepare(i, st)
    env.update(prepared.env)
    # Directory mount points the step needs stay in the image, empty, 0755 0:0: BuildKit 20.10
    # creates them in the root it snapshots (observed with Debian's docker.io 20.10.24).
    for mount in prepared.mounts:
        if mount.kind == "tmpfs" or (mount.source is not None and os.path.isdir(mount.source)):
            made += make_dirs(st, mount.target, lambda: (0, 0))
    try:
        sandbox = st.sandbox()
        result = sandbox.run(argv, env=env, cwd=cwd, user=user, stdout=st.output,
                             network=network, mounts=prepared.mounts, keep_upper=stageroot.upper_keeper(st.root))
    finally:
        prepared.stack.close()
        if scripts:
            shutil.rmtree(scripts, ignore_errors=True)
    if result.exit_code != 0:
        raise BuildError(
            f"RUN {' '.join(resolved.argv)}: exited with code {result.exit_code}", exit_code=result.exit_code
        )
    args = st.vars.arg_history()
    prefix = f"|{len(args)} {' '.join(args)} " if args else ""
    return Outcome(f"RUN {prefix}{' '.join(resolved.argv)} # buildkit", snapshot=True, upper=result.changes,
                   made=tuple(made))


def key_parts(i: ins.Run, st) -> list[str] | None:
    """What decides this RUN's result (see pybuildless.cache)."""
    from pybuildless.cache.keys import env_parts

    mount_parts = runmounts.key_parts(i, st) if i.mounts else []
    if mount_parts is None:
        return None
    resolved = i.resolve(st.shell)
    return ["RUN", *mount_parts, *resolved.argv, *[content for _, content, _ in resolved.files],
            *env_parts(st.vars.run_env()), f"user={st.user}", f"workdir={st.workdir}", f"network={i.network}"]


@dataclass(frozen=True)
class RunStep:
    """RUN: a command in the stage root's sandbox."""

    instruction: ins.Run
    touches_files: ClassVar[bool] = True

    def execute(self, ctx: StepContext) -> Outcome:
        return run(self.instruction, ctx)

    def cache_key(self, ctx: StepContext) -> list[str] | None:
        return key_parts(self.instruction, ctx)

    def config_effect(self, config: dict[str, Any]) -> dict[str, Any]:
        return config  # RUN leaves the config as it is
