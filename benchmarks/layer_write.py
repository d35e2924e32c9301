"""Layer writing: pybuildless's tar writer against Python's tarfile, in one process, alternating.

    python3 benchmarks/layer_write.py [--files 6000] [--samples 7] [--compression gzip]

Both write the same layer of a generated tree (``--files`` files of 0-4 KiB in 40 directories, like
the RUN of benchmarks/corpus/debian-files) into the same compressor; the tarfile side is the
construction layer.py used before it wrote headers itself (tests/tarfile_layer.py). Every sample
checks that both blobs have the same digest. Prints the median wall and CPU seconds of each
(process CPU, the compressor's thread included), the ratios new/tarfile (lower is faster) and the
load average before and after: on a shared machine read the figures together with it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pybuildless.fs.layer import whole_root_changes, write_layer  # noqa: E402
from tests.tarfile_layer import write_with_tarfile  # noqa: E402


def build_tree(root: Path, files: int) -> None:
    for i in range(files):
        d = root / "srv" / "data" / f"d{i % 40}"
        if i < 40:
            d.mkdir(parents=True)
        line = f"record {i} of the corpus: some payload to give the file a few hundred bytes {i}\n".encode()
        (d / f"f{i}").write_bytes(line * ((i * 37) % 4096 // len(line)))


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=6000)
    ap.add_argument("--samples", type=int, default=7)
    ap.add_argument("--compression", choices=("gzip", "zstd", "none"), default="gzip")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="pybuildless-layer-write-"))
    try:
        root = work / "root"
        build_tree(root, args.files)
        changes = whole_root_changes(root)
        print(f"{len(changes.paths)} entries, compression {args.compression}; load average {load()}")
        times: dict[str, list[float]] = {"tarfile": [], "new": []}
        cpu: dict[str, list[float]] = {"tarfile": [], "new": []}
        for sample in range(args.samples):
            order = ("tarfile", "new") if sample % 2 == 0 else ("new", "tarfile")
            digests = {}
            for which in order:
                out = work / f"out-{which}"
                out.mkdir(exist_ok=True)
                t, c = time.perf_counter(), time.process_time()
                if which == "new":
                    digests[which] = write_layer(root, changes, out, compression=args.compression).digest
                else:
                    with open(out / "layer", "wb") as f:
                        digests[which] = write_with_tarfile(str(root), changes, f, compression=args.compression).digest
                times[which].append(time.perf_counter() - t)
                cpu[which].append(time.process_time() - c)
                shutil.rmtree(out)
            if digests["new"] != digests["tarfile"]:
                print(f"sample {sample}: the blobs differ: {digests}", file=sys.stderr)
                return 1
        med = {k: statistics.median(v) for k, v in times.items()}
        med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
        for k, v in times.items():
            print(f"{k:8s} wall median {med[k]:.3f} s (min {min(v):.3f}, max {max(v):.3f}), "
                  f"CPU median {med_cpu[k]:.3f} s, {len(v)} samples")
        print(f"ratio new/tarfile: wall {med['new'] / med['tarfile']:.3f} (speed-up {med['tarfile'] / med['new']:.1f}x), "
              f"CPU {med_cpu['new'] / med_cpu['tarfile']:.3f} (speed-up {med_cpu['tarfile'] / med_cpu['new']:.1f}x); "
              f"identical digests; load average {load()}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
