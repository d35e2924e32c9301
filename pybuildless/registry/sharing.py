"""One ``Transport`` per registry host and behaviour in this process.

Pings, credentials, tokens and kept-alive connections are reused across the many
requests of a build: cache probes, several FROMs, the push-permission check and
the push. Pulling and pushing share a transport whenever the flags make them
behave the same (the same scheme rule, TLS verification and client certificate),
so a build that reads its base from the registry it pushes to pings it once.
"""

from __future__ import annotations

import threading

from pybuildless.registry.options import RegistryOptions
from pybuildless.registry.transport import Transport

_SHARED: dict[tuple, Transport] = {}
_SHARED_LOCK = threading.Lock()
_SHARED_MAX = 64


def behaviour(registry: str, options: RegistryOptions, pull: bool) -> tuple:
    """What a transport for ``registry`` does differently when pulling: only these flags."""
    return options.plain_http(registry, pull=pull), options.verify_tls(registry, pull=pull)


def shared_transport(registry: str, options: RegistryOptions, *, pull: bool = False) -> Transport:
    key = (registry, behaviour(registry, options, pull), options, id(options.keychain))
    with _SHARED_LOCK:
        transport = _SHARED.get(key)
        if transport is None:
            if len(_SHARED) >= _SHARED_MAX:
                _SHARED.pop(next(iter(_SHARED)))
            # Its own tokens: a transport the flags part from the host's other one sends them
            # differently (--insecure-pull: in plain HTTP), and a token asked for push on the
            # destinations must never go where only a pull was meant to (RFC 6750 §5.3).
            transport = _SHARED[key] = Transport(registry, options, pull=pull)
        return transport
