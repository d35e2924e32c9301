"""Cache keys: a hash chain over the parts that decide each step's result."""

from __future__ import annotations

import hashlib
import json
from typing import Iterable

# Bump when the meaning of a key changes, so old cache entries are never reused.
KEY_VERSION = "pybuildless-cache-v1"


def chain(previous: str, parts: Iterable[str]) -> str:
    """The key of a step: sha256 over the previous key and this step's parts.

    JSON framing keeps the parts unambiguous (no ``-``-joined collisions).
    """
    payload = json.dumps([KEY_VERSION, previous, *parts], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def env_parts(env: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in sorted(env.items())]
