"""Instructions that only change the image config: ENV, ARG, LABEL, EXPOSE, VOLUME, USER,
CMD, ENTRYPOINT, SHELL, STOPSIGNAL, HEALTHCHECK, ONBUILD, MAINTAINER.

Each is a step whose ``config_effect`` is the whole of what it does; ``execute`` applies it
to the stage and returns the history text. The instruction a step holds is already expanded
by the stage's ARG/ENV scope (``StageEnv.apply``).
"""

from __future__ import annotations

import json
import re
import signal
from dataclasses import dataclass
from typing import Any, ClassVar

from pybuildless.builder.commands.outcome import Outcome
from pybuildless.builder.commands.step import StepContext, with_container_config
from pybuildless.dockerfile import instructions as ins


def _pairs_text(pairs) -> str:
    return " ".join(f"{k}={v}" for k, v in pairs)


def _container(config: dict[str, Any]) -> dict[str, Any]:
    return config.get("config") or {}


def _shell(config: dict[str, Any]) -> list[str]:
    return list(_container(config).get("Shell") or ins.DEFAULT_SHELL)


@dataclass(frozen=True)
class ConfigStep:
    """A metadata step: no files, never cached on its own (its history text joins the key chain).

    The steps below are plain subclasses (their ``instruction`` annotation only names its type):
    they inherit ``__init__``, ``__repr__``, ``__eq__`` and ``__hash__``, which look at the
    instance's own class. Thirteen more dataclasses would each ``exec`` their generated methods
    at import, ~5 ms of every build that has a metadata instruction."""

    instruction: ins.Instruction
    touches_files: ClassVar[bool] = False

    def execute(self, ctx: StepContext) -> Outcome:
        ctx.stage.config = self.config_effect(ctx.stage.config)
        return Outcome(self.created_by(ctx.stage.config))

    def cache_key(self, ctx: StepContext) -> list[str] | None:
        return None

    def config_effect(self, config: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def created_by(self, config: dict[str, Any]) -> str:
        """The history text, given the config after the step."""
        raise NotImplementedError


class EnvStep(ConfigStep):
    instruction: ins.Env

    def config_effect(self, config: dict[str, Any]) -> dict[str, Any]:
        """Each pair replaces the variable in place or is appended (BuildKit's addEnv)."""
        env = list(_container(config).get("Env") or [])
        for key, value in self.instruction.pairs:
            item = f"{key}={value}"
            at = next((n for n, e in enumerate(env) if e.partition("=")[0] == key), None)
            if at is None:
                env.append(item)
            else:
                env[at] = item
        return with_container_config(config, Env=env)

    def execute(self, ctx: StepContext) -> Outcome:
        # The stage's scope already took the pairs (StageEnv.apply) and owns the list: its
        # order is the config's except where the base had no PATH (the scope appends it).
        ctx.stage.config = with_container_config(ctx.stage.config, Env=ctx.vars.image_env())
        return Outcome(self.created_by(ctx.stage.config))

    def created_by(self, config: dict[str, Any]) -> str:
        return f"ENV {_pairs_text(self.instruction.pairs)}"


class ArgStep(ConfigStep):
    """ARG declares in the stage's scope (done by ``StageEnv.apply``); the config is unchanged."""

    instruction: ins.Arg

    def config_effect(self, config: dict[str, Any]) -> dict[str, Any]:
        return config

    def created_by(self, config: dict[str, Any]) -> str:
        text = " ".join(k if v is None else f"{k}={v}" for k, v in self.instruction.pairs)
        return f"ARG {text}"


class LabelStep(ConfigStep):
    instruction: ins.Label

    def config_effect(self, config: dict[str, Any]) -> dict[str, Any]:
        labels = dict(_container(config).get("Labels") or {})
        labels.update(self.instruction.pairs)
        return with_container_config(config, Labels=labels)

    def created_by(self, config: dict[str, Any]) -> str:
        return f"LABEL {_pairs_text(self.instruction.pairs)}"


_PORT = re.compile(r"^(\d+)(?:-(\d+))?(?:/([A-Za-z]+))?$")


class ExposeStep(ConfigStep):
    instruction: ins.Expose

    def ports(self) -> list[str]:
        """``PORT/PROTO`` of every port named, ranges spread out, in order."""
        i = self.instruction
        added = []
        for word in i.ports:
            spec = word.rsplit(":", 1)[-1]  # ip:host:container keeps only the container port
            m = _PORT.match(spec)
            if not m:
                raise i.error(f"invalid port {word!r}: expected PORT[/PROTO] or START-END[/PROTO]")
            start, end, proto = int(m.group(1)), int(m.group(2) or m.group(1)), (m.group(3) or "tcp").lower()
            if proto not in ("tcp", "udp", "sctp") or not 0 < start <= end <= 65535:
                raise i.error(f"invalid port {word!r}")
            added += [f"{port}/{proto}" for port in range(start, end + 1)]
        return added

    def config_effect(self, config: dict[str, Any]) -> dict[str, Any]:
        ports = dict(_container(config).get("ExposedPorts") or {})
        ports.update({p: {} for p in self.ports()})
        return with_container_config(config, ExposedPorts=ports)

    def created_by(self, config: dict[str, Any]) -> str:
        return "EXPOSE " + " ".join(self.ports())


class VolumeStep(ConfigStep):
    instruction: ins.Volume

    def config_effect(self, config: dict[str, Any]) -> dict[str, Any]:
        volumes = dict(_container(config).get("Volumes") or {})
        volumes.update({path: {} for path in self.instruction.paths})
        return with_container_config(config, Volumes=volumes)

    def created_by(self, config: dict[str, Any]) -> str:
        return f"VOLUME {json.dumps(list(self.instruction.paths))}"


class UserStep(ConfigStep):
    instruction: ins.User

    def config_effect(self, config: dict[str, Any]) -> dict[str, Any]:
        return with_container_config(config, User=self.instruction.value)

    def created_by(self, config: dict[str, Any]) -> str:
        return f"USER {self.instruction.value}"


class CmdStep(ConfigStep):
    instruction: ins.Cmd

    def config_effect(self, config: dict[str, Any]) -> dict[str, Any]:
        # BuildKit v0.8 (Docker 20.10) marks every CMD so: dockerfile2llb/convert.go@eeb7b65ab7d6
        # dispatchCmd sets Config.ArgsEscaped = true (ENTRYPOINT leaves it as it is).
        return with_container_config(config, Cmd=self.instruction.command.argv(_shell(config)), ArgsEscaped=True)

    def execute(self, ctx: StepContext) -> Outcome:
        ctx.stage.cmd_set = True
        return super().execute(ctx)

    def created_by(self, config: dict[str, Any]) -> str:
        return f"CMD {json.dumps(_container(config)['Cmd'])}"


class EntrypointStep(ConfigStep):
    instruction: ins.Entrypoint

    def config_effect(self, config: dict[str, Any]) -> dict[str, Any]:
        """BuildKit's rule for a stage that set no CMD yet: an inherited CMD is dropped
        (``execute`` keeps the CMD the stage set itself)."""
        argv = self.instruction.command.argv(_shell(config))
        return with_container_config(config, Entrypoint=argv or None, Cmd=None)

    def execute(self, ctx: StepContext) -> Outcome:
        own_cmd = ctx.container_config.get("Cmd")
        config = self.config_effect(ctx.stage.config)
        if ctx.stage.cmd_set:
            config = with_container_config(config, Cmd=own_cmd)
        ctx.stage.config = config
        return Outcome(f"ENTRYPOINT {json.dumps(self.instruction.command.argv(_shell(config)))}")


class ShellStep(ConfigStep):
    instruction: ins.Shell

    def config_effect(self, config: dict[str, Any]) -> dict[str, Any]:
        return with_container_config(config, Shell=list(self.instruction.argv))

    def created_by(self, config: dict[str, Any]) -> str:
        return f"SHELL {json.dumps(list(self.instruction.argv))}"


def _valid_signal(value: str) -> bool:
    if value.isdigit():
        return 0 < int(value) < 65
    name = value.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    return hasattr(signal.Signals, name) or re.fullmatch(r"SIGRTM(IN|AX)([+-]\d+)?", name) is not None


class StopSignalStep(ConfigStep):
    instruction: ins.StopSignal

    def config_effect(self, config: dict[str, Any]) -> dict[str, Any]:
        value = self.instruction.value
        if not _valid_signal(value):
            raise self.instruction.error(f"invalid STOPSIGNAL {value!r}")
        return with_container_config(config, StopSignal=value)

    def created_by(self, config: dict[str, Any]) -> str:
        return f"STOPSIGNAL {self.instruction.value}"


class HealthcheckStep(ConfigStep):
    instruction: ins.Healthcheck

    def check(self) -> dict[str, Any]:
        i = self.instruction
        check: dict[str, Any] = {"Test": list(i.test)}
        for key, value in (("Interval", i.interval), ("Timeout", i.timeout), ("StartPeriod", i.start_period),
                           ("StartInterval", i.start_interval), ("Retries", i.retries)):
            if value:
                check[key] = value
        return check

    def config_effect(self, config: dict[str, Any]) -> dict[str, Any]:
        return with_container_config(config, Healthcheck=self.check())

    def created_by(self, config: dict[str, Any]) -> str:
        return f"HEALTHCHECK {json.dumps(self.check(), sort_keys=True)}"


class OnbuildStep(ConfigStep):
    instruction: ins.Onbuild

    def config_effect(self, config: dict[str, Any]) -> dict[str, Any]:
        triggers = list(_container(config).get("OnBuild") or [])
        return with_container_config(config, OnBuild=[*triggers, self.instruction.trigger])

    def created_by(self, config: dict[str, Any]) -> str:
        return f"ONBUILD {self.instruction.trigger}"


class MaintainerStep(ConfigStep):
    instruction: ins.Maintainer

    def config_effect(self, config: dict[str, Any]) -> dict[str, Any]:
        return {**config, "author": self.instruction.author}

    def created_by(self, config: dict[str, Any]) -> str:
        return f"MAINTAINER {self.instruction.name}"
