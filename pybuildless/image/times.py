"""Timestamps as image configs and history entries write them (``created``)."""

from __future__ import annotations

import datetime as dt
import time


def rfc3339(when: float | dt.datetime | None = None) -> str:
    """``when`` (now if None; a naive datetime is UTC) as RFC 3339 in UTC with a ``Z`` suffix.

    Microseconds are written only when there are some, so whole-second times (``SOURCE_DATE_EPOCH``,
    ``--reproducible``) read ``2021-01-01T00:00:00Z`` as BuildKit writes them.
    """
    if when is None:
        when = time.time()
    if isinstance(when, dt.datetime):
        stamp = when if when.tzinfo is not None else when.replace(tzinfo=dt.timezone.utc)
    else:
        stamp = dt.datetime.fromtimestamp(when, dt.timezone.utc)
    return stamp.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ").replace(".000000Z", "Z")
