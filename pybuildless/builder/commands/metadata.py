"""Instructions that only change the image config: ENV, ARG, LABEL, EXPOSE, VOLUME, USER,
CMD, ENTRYPOINT, SHELL, STOPSIGNAL, HEALTHCHECK, ONBUILD, MAINTAINER."""

from __future__ import annotations

import json
import re
import signal

from pybuildless.builder.commands.outcome import Outcome
from pybuildless.dockerfile import instructions as ins


def _pairs_text(pairs) -> str:
    return " ".join(f"{k}={v}" for k, v in pairs)


def env(i: ins.Env, st) -> Outcome:
    e = i  # expanded by the stage's StageEnv, which also recorded the values
    st.container_config["Env"] = st.vars.image_env()
    return Outcome(f"ENV {_pairs_text(e.pairs)}")


def arg(i: ins.Arg, st) -> Outcome:
    e = i  # declared in the stage's StageEnv, values resolved
    text = " ".join(k if v is None else f"{k}={v}" for k, v in e.pairs)
    return Outcome(f"ARG {text}")


def label(i: ins.Label, st) -> Outcome:
    e = i  # expanded by the stage's StageEnv
    labels = st.container_config.get("Labels") or {}
    for key, value in e.pairs:
        labels[key] = value
    st.container_config["Labels"] = labels
    return Outcome(f"LABEL {_pairs_text(e.pairs)}")


_PORT = re.compile(r"^(\d+)(?:-(\d+))?(?:/([A-Za-z]+))?$")


def expose(i: ins.Expose, st) -> Outcome:
    e = i  # expanded by the stage's StageEnv
    ports = st.container_config.get("ExposedPorts") or {}
    added = []
    for word in e.ports:
        spec = word.rsplit(":", 1)[-1]  # ip:host:container keeps only the container port
        m = _PORT.match(spec)
        if not m:
            raise i.error(f"invalid port {word!r}: expected PORT[/PROTO] or START-END[/PROTO]")
        start, end, proto = int(m.group(1)), int(m.group(2) or m.group(1)), (m.group(3) or "tcp").lower()
        if proto not in ("tcp", "udp", "sctp") or not 0 < start <= end <= 65535:
            raise i.error(f"invalid port {word!r}")
        for port in range(start, end + 1):
            ports[f"{port}/{proto}"] = {}
            added.append(f"{port}/{proto}")
    st.container_config["ExposedPorts"] = ports
    return Outcome("EXPOSE " + " ".join(added))


def volume(i: ins.Volume, st) -> Outcome:
    e = i  # expanded by the stage's StageEnv
    volumes = st.container_config.get("Volumes") or {}
    for path in e.paths:
        volumes[path] = {}
    st.container_config["Volumes"] = volumes
    return Outcome(f"VOLUME {json.dumps(list(e.paths))}")


def user(i: ins.User, st) -> Outcome:
    e = i  # expanded by the stage's StageEnv
    st.container_config["User"] = e.value
    return Outcome(f"USER {e.value}")


def cmd(i: ins.Cmd, st) -> Outcome:
    argv = i.command.argv(st.shell)
    st.container_config["Cmd"] = argv
    # BuildKit v0.8 (Docker 20.10) marks every CMD so: dockerfile2llb/convert.go@eeb7b65ab7d6
    # dispatchCmd sets Config.ArgsEscaped = true (ENTRYPOINT leaves it as it is).
    st.container_config["ArgsEscaped"] = True
    st.cmd_set = True
    return Outcome(f"CMD {json.dumps(argv)}")


def entrypoint(i: ins.Entrypoint, st) -> Outcome:
    argv = i.command.argv(st.shell)
    st.container_config["Entrypoint"] = argv or None
    if not st.cmd_set:
        # BuildKit: ENTRYPOINT resets an inherited CMD unless this stage set one.
        st.container_config["Cmd"] = None
    return Outcome(f"ENTRYPOINT {json.dumps(argv)}")


def shell(i: ins.Shell, st) -> Outcome:
    st.container_config["Shell"] = list(i.argv)
    return Outcome(f"SHELL {json.dumps(list(i.argv))}")


def _valid_signal(value: str) -> bool:
    if value.isdigit():
        return 0 < int(value) < 65
    name = value.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    return hasattr(signal.Signals, name) or re.fullmatch(r"SIGRTM(IN|AX)([+-]\d+)?", name) is not None


def stopsignal(i: ins.StopSignal, st) -> Outcome:
    e = i  # expanded by the stage's StageEnv
    if not _valid_signal(e.value):
        raise i.error(f"invalid STOPSIGNAL {e.value!r}")
    st.container_config["StopSignal"] = e.value
    return Outcome(f"STOPSIGNAL {e.value}")


def healthcheck(i: ins.Healthcheck, st) -> Outcome:
    check: dict = {"Test": list(i.test)}
    for key, value in (("Interval", i.interval), ("Timeout", i.timeout), ("StartPeriod", i.start_period),
                       ("StartInterval", i.start_interval), ("Retries", i.retries)):
        if value:
            check[key] = value
    st.container_config["Healthcheck"] = check
    return Outcome(f"HEALTHCHECK {json.dumps(check, sort_keys=True)}")


def onbuild(i: ins.Onbuild, st) -> Outcome:
    triggers = st.container_config.get("OnBuild") or []
    triggers.append(i.trigger)
    st.container_config["OnBuild"] = triggers
    return Outcome(f"ONBUILD {i.trigger}")


def maintainer(i: ins.Maintainer, st) -> Outcome:
    st.config["author"] = i.author
    return Outcome(f"MAINTAINER {i.name}")
