"""Live transfer progress (pybuildless.transfer): the renderer on a fake terminal, its
interplay with log records, and real pulls/pushes with stderr on a pty or a pipe."""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import re
import select
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from pybuildless import transfer
from pybuildless.image.descriptor import Digest
from pybuildless.log import reset_logging, setup_logging
from pybuildless.registry.verify import VerifyingReader

DIGEST_A = "sha256:" + "0123456789ab" + "c" * 52
DIGEST_B = "sha256:" + "fedcba987654" + "d" * 52
MB = 1_000_000


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


_CSI = re.compile(r"\x1b\[(\d*)([A-Za-z])")


def screen(raw: str) -> list[str]:
    """The text a terminal shows after ``raw``: just the controls the renderer and the
    logger use (\\r, \\n, cursor up, erase to end of line / screen), trailing blanks dropped."""
    rows: list[list[str]] = [[]]
    row = col = 0
    i = 0
    while i < len(raw):
        m = _CSI.match(raw, i)
        if m:
            n, op = int(m.group(1) or 0), m.group(2)
            if op == "A":
                row = max(0, row - (n or 1))
            elif op == "K":
                del rows[row][col:]
            elif op == "J":
                del rows[row][col:]
                del rows[row + 1:]
            elif op == "m":
                pass  # colours
            else:
                raise AssertionError(f"unexpected control sequence {m.group(0)!r}")
            i = m.end()
            continue
        ch = raw[i]
        i += 1
        if ch == "\r":
            col = 0
        elif ch == "\n":  # a pty's onlcr, and what a terminal does after a log line
            row, col = row + 1, 0
            while len(rows) <= row:
                rows.append([])
        else:
            line = rows[row]
            line.extend(" " * (col - len(line)))
            if col < len(line):
                line[col] = ch
            else:
                line.append(ch)
            col += 1
    text = ["".join(r).rstrip() for r in rows]
    while text and not text[-1]:
        text.pop()
    return text


@pytest.fixture
def tty():
    stream = FakeTTY()
    clock = Clock()
    # an interval that is exact in binary, so the fake clock's sums compare exactly
    display = transfer.TerminalProgress(stream, clock=clock, width=100, interval=0.125)
    old = transfer.install(display)
    try:
        yield stream, clock, display
    finally:
        transfer.install(old)


# -- the renderer -------------------------------------------------------------------------


def test_lines_show_bytes_done_and_totals_per_blob(tty):
    stream, clock, _ = tty
    a = transfer.start(DIGEST_A, 45_600_000, "pulling")
    b = transfer.start(DIGEST_B, 2 * MB, "pushing")
    assert stream.getvalue() == ""  # nothing is drawn before bytes move
    a.advance(12_300_000)
    assert screen(stream.getvalue()) == ["pulling sha256:0123456789ab  12.3MB/45.6MB",
                                         "pushing sha256:fedcba987654  0B/2.0MB"]
    clock.now += 0.125
    b.advance(1_500_000)
    assert screen(stream.getvalue()) == ["pulling sha256:0123456789ab  12.3MB/45.6MB",
                                         "pushing sha256:fedcba987654  1.5MB/2.0MB"]
    clock.now += 0.125
    a.advance(33_300_000)
    assert screen(stream.getvalue())[0] == "pulling sha256:0123456789ab  45.6MB/45.6MB"
    a.finish()
    b.finish()


def test_redraws_are_throttled_to_the_interval(tty):
    assert transfer.INTERVAL == 0.1  # ten redraws a second at most
    stream, clock, _ = tty
    t = transfer.start(DIGEST_A, 10 * MB, "pulling")
    t.advance(1000)
    first = stream.getvalue()
    for _ in range(500):
        t.advance(1000)  # same instant: no output at all
    assert stream.getvalue() == first
    clock.now += 0.0625
    t.advance(1000)
    assert stream.getvalue() == first
    clock.now += 0.0625
    t.advance(1000)
    assert len(stream.getvalue()) > len(first)
    assert screen(stream.getvalue()) == ["pulling sha256:0123456789ab  503.0kB/10.0MB"]
    t.finish()


def test_finishing_the_last_transfer_erases_every_line(tty):
    stream, clock, _ = tty
    stream.write("INFO[cli] before\n")
    a = transfer.start(DIGEST_A, MB, "pulling")
    b = transfer.start(DIGEST_B, MB, "pulling")
    a.advance(10)
    assert len(screen(stream.getvalue())) == 3
    a.finish()  # its line goes at once, not at the next throttled redraw
    assert screen(stream.getvalue()) == ["INFO[cli] before", "pulling sha256:fedcba987654  0B/1.0MB"]
    b.finish()
    assert screen(stream.getvalue()) == ["INFO[cli] before"]
    assert stream.getvalue().endswith("\x1b[J")
    a.finish()  # twice is harmless
    end = len(stream.getvalue())
    transfer.start(DIGEST_A, MB, "pulling").finish()  # never advanced: never drawn, nothing to erase
    assert len(stream.getvalue()) == end


def test_log_records_are_written_above_the_lines_never_into_them(tty):
    stream, clock, display = tty
    setup_logging("info", "text", stream=stream)
    try:
        log = logging.getLogger("pybuildless.registry.remote")
        a = transfer.start(DIGEST_A, 4 * MB, "pulling")
        b = transfer.start(DIGEST_B, 4 * MB, "pulling")
        a.advance(MB)
        log.info("resolved %s", "example/busybox")
        assert screen(stream.getvalue()) == [
            "INFO[registry.remote] resolved example/busybox",
            "pulling sha256:0123456789ab  1.0MB/4.0MB",
            "pulling sha256:fedcba987654  0B/4.0MB",
        ]
        # the record itself is written while the lines are off the screen
        raw = stream.getvalue()
        record_at = raw.index("INFO[")
        assert raw[:record_at].endswith("\r\x1b[2A\x1b[J")
        b.advance(4 * MB)
        b.finish()
        log.warning("pulled layer %s", DIGEST_B)
        a.finish()
        assert screen(stream.getvalue()) == [
            "INFO[registry.remote] resolved example/busybox",
            f"WARN[registry.remote] pulled layer {DIGEST_B}",
        ]
    finally:
        reset_logging()


def test_output_that_stops_mid_line_keeps_the_lines_hidden(tty):
    stream, clock, _ = tty
    t = transfer.start(DIGEST_A, MB, "pushing")
    t.advance(1)
    with transfer.paused(redraw=False):
        stream.write("Downloading 45%")
    clock.now += 1
    t.advance(1)  # would glue the line to "Downloading 45%"
    assert screen(stream.getvalue()) == ["Downloading 45%"]
    with transfer.paused():
        stream.write("\rDownloading 100%\n")
    assert screen(stream.getvalue()) == ["Downloading 100%", "pushing sha256:0123456789ab  2B/1.0MB"]
    t.finish()
    assert screen(stream.getvalue()) == ["Downloading 100%"]


def test_parallel_transfers_from_many_threads_add_up(tty):
    stream, clock, _ = tty
    handles = [transfer.start(f"sha256:{n:012x}" + "0" * 52, 8 * 4096, "pulling") for n in range(6)]
    barrier = threading.Barrier(len(handles))

    def work(h):
        barrier.wait()
        for _ in range(8):
            h.advance(4096)
            clock.now += 0.05  # racy on purpose: redraws happen from every thread

    threads = [threading.Thread(target=work, args=(h,)) for h in handles]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    clock.now += 1
    handles[0].advance(0)
    assert screen(stream.getvalue()) == [f"pulling sha256:{n:012x}  32.8kB/32.8kB" for n in range(6)]
    for h in handles:
        h.finish()
    assert screen(stream.getvalue()) == []


def test_many_blobs_are_summed_up_and_lines_never_wrap():
    stream, clock = FakeTTY(), Clock()
    display = transfer.TerminalProgress(stream, clock=clock, width=31)
    handles = [display.start(f"sha256:{n:064x}", 5 * MB, "pulling") for n in range(transfer.MAX_LINES + 3)]
    for h in handles:
        h.advance(MB)
    clock.now += 1
    handles[0].advance(0)
    shown = screen(stream.getvalue())
    assert len(shown) == transfer.MAX_LINES + 1
    assert shown[0] == "pulling sha256:000000000000  1"  # 30 columns: one short of the width
    assert shown[-1] == "... 3 more  3.0MB"
    display.close()
    assert screen(stream.getvalue()) == []


def test_enable_only_on_a_terminal_and_not_for_json(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    old = transfer.install(None)
    try:
        assert transfer.enable(io.StringIO(), "text") is None
        assert isinstance(transfer.start(DIGEST_A, 1, "pulling"), type(transfer.NULL_TRANSFER))
        assert transfer.enable(FakeTTY(), "json") is None
        assert transfer.start(DIGEST_A, 1, "pulling") is transfer.NULL_TRANSFER
        tty = FakeTTY()
        display = transfer.enable(tty, "color")
        assert isinstance(display, transfer.TerminalProgress)
        h = transfer.start(DIGEST_A, 1, "pulling")
        h.advance(1)
        assert "pulling sha256:0123456789ab  1B/1B" in tty.getvalue()
        h.finish()
        monkeypatch.setenv("TERM", "dumb")  # no cursor movement there
        assert transfer.enable(FakeTTY(), "text") is None
    finally:
        transfer.install(old)


def test_a_closed_terminal_does_not_break_the_transfer(tty):
    stream, clock, display = tty
    t = transfer.start(DIGEST_A, MB, "pulling")
    stream.close()
    t.advance(10)
    t.finish()
    with transfer.paused():
        pass


def test_verifying_reader_reports_what_it_reads_and_finishes_once():
    data = os.urandom(300_000)
    seen: list[int] = []
    finished: list[bool] = []

    class Probe:
        def advance(self, n):
            seen.append(n)

        def finish(self):
            finished.append(True)

    with VerifyingReader(io.BytesIO(data), Digest.of_bytes(data), len(data)).report_to(Probe()) as r:
        assert r.read(1000) == data[:1000]
    # close() drains (and verifies) the rest: those bytes are reported too
    assert sum(seen) == len(data) and finished == [True]


def test_human_sizes():
    assert [transfer.human_size(n) for n in (0, 999, 1000, 12_345_678, 45_600_000_000)] == \
        ["0B", "999B", "1.0kB", "12.3MB", "45.6GB"]


# -- real pulls and pushes ------------------------------------------------------------------


def _cli(args: list[str], *, tty: bool, timeout: float = 120) -> tuple[int, str, str]:
    """Run ``pybuildless ARGS``; stderr on a fresh 100x30 pty when ``tty``. (rc, stdout, stderr)."""
    cmd = [sys.executable, "-m", "pybuildless", *args]
    if not tty:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return proc.returncode, proc.stdout, proc.stderr
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
                                env={**os.environ, "TERM": "xterm"})
    finally:
        os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every slave end is closed
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        stdout = proc.stdout.read().decode()
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    return rc, stdout, out.decode("utf-8", "replace")


def _layer_digests(layout: Path) -> tuple[list[str], dict]:
    index = json.loads((layout / "index.json").read_text())
    [entry] = index["manifests"]
    algorithm, _, hex_ = entry["digest"].partition(":")
    manifest = json.loads((layout / "blobs" / algorithm / hex_).read_bytes())
    return [layer["digest"] for layer in manifest["layers"]], manifest


def test_pull_and_push_on_a_terminal_show_live_progress_and_leave_a_clean_screen(busybox_image, registry,
                                                                                  tmp_path):
    from pybuildless.image.layout import read_layout
    from pybuildless.image.validate import validate_image

    layout = tmp_path / "layout"
    rc, stdout, term = _cli(["pull", busybox_image, str(layout)], tty=True)
    assert rc == 0, term
    digests, manifest = _layer_digests(layout)
    for layer in manifest["layers"]:
        short = layer["digest"][:19]
        total = transfer.human_size(layer["size"])
        assert re.search(rf"pulling {short}  [0-9.]+k?M?B/{re.escape(total)}\x1b\[K", term), term
    # whatever was drawn is gone at the end: only log lines remain on the screen
    shown = screen(term)
    assert shown and not any(line.startswith("pulling ") for line in shown), shown
    assert any(line.startswith("INFO[registry.remote] pulled layer") for line in shown), shown
    assert stdout.strip().startswith(busybox_image + "@sha256:")
    # the layout is complete and every blob verifies
    validate_image(read_layout(layout, "latest"), decompress=True)
    umoci = subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:latest",
                            str(tmp_path / "bundle")], capture_output=True, text=True, timeout=120)
    assert umoci.returncode == 0, umoci.stderr
    assert (tmp_path / "bundle" / "rootfs" / "bin" / "busybox").read_bytes() == Path("/bin/busybox").read_bytes()

    rc, stdout, term = _cli(["push", str(layout), registry.ref("progress/pushed:v1")], tty=True)
    assert rc == 0, term
    for digest in digests:
        assert f"pushing {digest[:19]}  " in term, term
    shown = screen(term)
    assert not any(line.startswith("pushing ") for line in shown), shown
    assert any(f"layer {digests[0]}: uploaded" in line for line in shown), shown


def test_no_progress_when_stderr_is_not_a_terminal_or_logs_are_json(busybox_image, tmp_path):
    rc, stdout, stderr = _cli(["pull", busybox_image, str(tmp_path / "piped")], tty=False)
    assert rc == 0, stderr
    assert "pulled layer sha256:" in stderr
    assert "pulling " not in stderr and "\x1b[" not in stderr and "\r" not in stderr

    rc, stdout, term = _cli(["pull", "--log-format", "json", busybox_image, str(tmp_path / "json")], tty=True)
    assert rc == 0, term
    assert "pulling " not in term and "\x1b[" not in term
    records = [json.loads(line) for line in term.splitlines() if line.strip()]
    assert any(r["msg"].startswith("pulled layer sha256:") for r in records)
