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
from pybuildless.registry.tokens import BuildTokens
from pybuildless.registry.transport import Transport

_SHARED: dict[tuple, Transport] = {}
_TOKENS: dict[tuple, BuildTokens] = {}
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
            # the pulling and the pushing transport of a host share their tokens even when the
            # flags part them (--insecure-pull): a token is the token server's, whatever the scheme
            tokens_key = (registry, options, id(options.keychain))
            tokens = _TOKENS.get(tokens_key)
            if tokens is None:
                if len(_TOKENS) >= _SHARED_MAX:
                    _TOKENS.pop(next(iter(_TOKENS)))
                tokens = _TOKENS[tokens_key] = BuildTokens()
            transport = _SHARED[key] = Transport(registry, options, pull=pull, tokens=tokens)
        return transport
