#!/usr/bin/env python3
"""Two independent CPU-heavy stages built with --jobs 1 and --jobs 2 in the same run.

Prints both wall times and the ratio parallel/sequential (below 1.0 means faster). Needs root
(chroot isolation) and Debian's docker-registry; starts its own registry on loopback.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures.images import make_busybox_rootfs, push_layout, write_oci_layout  # noqa: E402
from tests.fixtures.registry import start_registry  # noqa: E402

HEAVY = 'RUN i=0; while [ $i -lt {n} ]; do i=$((i+1)); done; echo $i > /{name}'


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 400000
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server, stop = start_registry(work / "registry")
        try:
            layout = write_oci_layout(make_busybox_rootfs(work / "rootfs"), work / "layout")
            base = push_layout(layout, server, "bench/busybox:latest")
            ctx = work / "ctx"
            ctx.mkdir()
            (ctx / "Dockerfile").write_text(
                f"FROM {base} AS a\n{HEAVY.format(n=n, name='a')}\n"
                f"FROM {base} AS b\n{HEAVY.format(n=n, name='b')}\n"
                f"FROM {base}\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n")
            times = {}
            for jobs in ("1", "2", "1", "2"):
                started = time.monotonic()
                subprocess.run([sys.executable, "-m", "pybuildless", "build", "-c", str(ctx), "--jobs", jobs,
                                "-d", server.ref("bench/parallel:1")], check=True, capture_output=True, cwd=ROOT)
                times.setdefault(jobs, []).append(time.monotonic() - started)
            seq, par = min(times["1"]), min(times["2"])
            print(f"two independent heavy stages: sequential {seq:.2f}s, parallel {par:.2f}s, "
                  f"ratio {par / seq:.2f}")
        finally:
            stop()


if __name__ == "__main__":
    main()
