"""The results table of docs/security.md from an ESCAPE_REPORT file:

    ESCAPE_REPORT=/tmp/escape.json python3 -m pytest tests/escape
    python3 -m tests.escape.report /tmp/escape.json

One row per case: each mode's verdict (the errno or what the probe saw) and which
single layer stops it on its own (the one-layer containers of test_layers.py), or
what else does where no single layer is the answer.
"""

from __future__ import annotations

import json
import sys

from tests.escape.cases import CASES, SURVIVOR_NAMES

MODES = (("chroot/corpus", "chroot"), ("userns/corpus", "userns"), ("inplace/corpus", "in-place"),
         ("container-chroot/corpus", "chroot in a container"),
         ("container-rootless/corpus", "rootless image in a container"))
BASELINES = (("inplace/baseline", "the container itself (root)"),
             ("container-rootless/baseline", "the container itself (uid 1000)"))
LAYERS = ("capabilities", "masks", "seccomp")
# What stops the cases that are not about one container layer (see test_layers._NOT_LAYERED).
OTHER = {
    "proc_secret": "pid namespace (builder not in it); init blanks its cmdline and environment",
    "init_environ": "init is not dumpable and the step lacks CAP_SYS_PTRACE",
    "ptrace_init": "init is not dumpable and keeps capabilities the step lacks",
    "kaniko_credentials": "/kaniko is not in the step's root (chroot, userns); hidden by a mount namespace (in-place)",
    "ptrace_host": "pid namespace",
    "double_chroot": "pivot_root (the host tree is detached); CAP_SYS_CHROOT dropped in the plain-chroot fallback",
    "host_devices": "the step's /dev is a tmpfs with null, zero, full, random, urandom, tty",
    "core_pattern_write": "read-only /proc/sys",
    "init_exe": "init is not dumpable (EACCES); the kernel refuses writes to a running program (ETXTBSY)",
    "leaked_fds": "the command keeps only stdin, stdout and stderr; its cwd is set inside the root",
    "proc_roots": "pid namespace: every process the step sees has the step's root",
}


def _cell(lines: list[list[str]] | None) -> str:
    if not lines:
        return "—"
    escaped = [d for v, d in lines if v != "blocked"]
    if escaped:
        return "**ESCAPED** " + ", ".join(sorted(set(d.split(":")[0] for d in escaped)))[:40]
    details = sorted({d.rsplit(":", 1)[-1] if d.startswith("/") else d for _, d in lines})
    return "blocked: " + ", ".join(details)[:40]


def _stops(data: dict, name: str) -> str:
    if name in OTHER:
        return OTHER[name]
    opened = data.get("layer-open/run", {}).get("cases", {}).get(name)
    if opened and not any(v == "ESCAPED" for v, _ in opened):
        seen = _cell(opened).removeprefix("blocked: ")
        if "ETXTBSY" in seen:
            return "the kernel: a running program cannot be written (ETXTBSY)"
        return f"absent from this kernel ({seen.split('(')[0]})"
    def stops(layer: str) -> bool:
        lines = data.get(f"layer-{layer}/run", {}).get("cases", {}).get(name, [["?", ""]])
        return all(v == "blocked" for v, _ in lines)

    layers = [layer for layer in LAYERS if stops(layer)]
    return ", ".join(layers) or "no single layer"


def table(data: dict) -> str:
    head = ["case", "attempt"] + [label for _, label in MODES + BASELINES] + ["stopped on its own by"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in CASES:
        cells = [f"`{case.name}`", case.what] + [_cell(data.get(key, {}).get("cases", {}).get(case.name))
                                                  for key, _ in MODES + BASELINES]
        cells.append(_stops(data, case.name))
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    for name in SURVIVOR_NAMES:
        cells = [f"`survivor_{name}`", "a process left behind writes into the root during later steps"]
        cells += [_cell(data.get(key.replace("corpus", "survivors"), {}).get("cases", {}).get(f"survivor_{name}"))
                  for key, _ in MODES]
        cells += ["—"] * len(BASELINES)
        cells += ["every process of the step is killed when it ends (pid namespace, or the monitor's sweep)"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python3 -m tests.escape.report ESCAPE_REPORT.json")
    with open(sys.argv[1], encoding="utf-8") as f:
        print(table(json.load(f)))


if __name__ == "__main__":
    main()
