"""A snapshot's state carried across a remount of its root (a RUN diff stacked as a lower dir).

A snapshot tells an unchanged entry from a replaced one by its device and inode
numbers. Mounting the root again (``builder.overlayroot.stack_upper``) gives every
entry new ones, although only what the RUN's upper dir holds changed. The state
recorded before the RUN is therefore kept field for field, with the numbers of
the entry as it is now, except where the step itself replaced the entry: there
the old numbers are made to match nothing, as the copy ``fs.overlay.apply_upper``
would have made gives a new inode too. The next ``take_paths`` then reports
exactly what it reports after ``apply_upper``: a directory recreated by the step
(opaque in the upper dir) is recreated, a file the step wrote is modified, a
directory whose entries changed is compared by its metadata. Under
``--single-snapshot`` no snapshot comes between two RUNs: a replaced entry stays
marked so until one does.
"""

from __future__ import annotations

import stat

from pybuildless.fs.changes import DEV, INO, MODE, Changes

_NO_INODE = -1  # never a real inode number: the entry counts as replaced


def rekeyed_state(state: dict[str, tuple], now: dict[str, tuple], changes: Changes, *,
                  device: int | None = None) -> dict[str, tuple]:
    """``state`` (keys recorded before the step) under the numbers of ``now`` (the keys of the
    remounted root); ``changes``: the step's, read from its upper dir.

    ``device``: ``now`` holds only the paths whose inode numbers may have changed, and every
    other path keeps its inode number on this device (an overlay whose layers share one
    filesystem reports the real inode numbers and its own device). None: ``now`` is the whole
    root, and a path missing from it is gone."""
    replaced = set(changes.opaque)
    written = set(changes.added) | set(changes.modified)
    out: dict[str, tuple] = {}
    for rel, old in state.items():
        new = now.get(rel)
        if old[INO] == _NO_INODE:
            out[rel] = old  # replaced by an earlier step whose changes no snapshot has taken yet
            continue
        if new is None:
            # gone (deleted by the step, reported as before), or in place under the new device
            out[rel] = old if device is None else old[:DEV] + (device,) + old[DEV + 1:]
            continue
        if rel in replaced or (rel in written and not stat.S_ISDIR(old[MODE])):
            ino, dev = _NO_INODE, old[DEV]
        else:
            ino, dev = new[INO], new[DEV]
        out[rel] = old[:INO] + (ino, dev) + old[DEV + 1:]
    return out
