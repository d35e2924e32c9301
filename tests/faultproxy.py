"""A threaded HTTP proxy on loopback in front of a real registry, injecting faults.

Each ``Fault`` matches requests by method and a path regex and applies to the
next ``count`` matching requests: an error status (optionally with
``Retry-After``), a connection reset before or in the middle of the response
body, a delay, or a corrupted body. Everything else is forwarded unchanged
(the ``Host`` header included, so the registry's ``Location`` URLs point back
at the proxy). ``log`` records (method, path, status or fault) per request.
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, urlunsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization"}


@dataclass
class Fault:
    # "status" | "reset" | "reset_mid_body" | "truncate" (half the body, clean close) | "slow" |
    # "corrupt" | "header" | "redirect" | "relocate" (Location header moved to ``location``'s host)
    kind: str
    path: str = ".*"  # regex searched in the request path (with query)
    method: str | None = None
    count: int = 1  # how many matching requests it applies to; -1 = all
    status: int = 503
    retry_after: str | None = None
    delay: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()  # added to the response ("header")
    location: str = ""  # "redirect": 307 to this prefix + the request path
    body: bytes | None = None  # "status": the error body to send instead of the default one
    hits: int = field(default=0, init=False)

    def matches(self, method: str, path: str) -> bool:
        if self.count != -1 and self.hits >= self.count:
            return False
        return (self.method is None or self.method == method) and re.search(self.path, path) is not None


class FaultProxy:
    def __init__(self, upstream_url: str, *, upstream_authorization: str | None = None) -> None:
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname, parts.port or 80)
        # sent upstream in place of the client's own (a presigned-storage stand-in)
        self.upstream_authorization = upstream_authorization
        self.faults: list[Fault] = []
        self.log: list[tuple[str, str, str]] = []
        self.authorizations: list[tuple[str, str, str | None]] = []  # (method, path, Authorization)
        self.headers: list[tuple[str, str, dict[str, str]]] = []  # (method, path, request headers)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def handle_one(self) -> None:
                proxy._handle(self)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_one

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # resets leave the handler writing to a closed socket; that is the point, not an error
        self.server.handle_error = lambda request, client_address: None
        self.port = self.server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, *faults: Fault) -> "FaultProxy":
        with self._lock:
            self.faults.extend(faults)
        return self

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def count(self, method: str, path_regex: str, outcome: str | None = None) -> int:
        return sum(1 for m, p, o in list(self.log)
                   if m == method and re.search(path_regex, p) and (outcome is None or o == outcome))

    def _pick(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None

    def _record(self, method: str, path: str, outcome: str) -> None:
        with self._lock:
            self.log.append((method, path, outcome))

    # -- one request ----------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        method, path = h.command, h.path
        body = _read_body(h)
        with self._lock:
            self.authorizations.append((method, path, h.headers.get("Authorization")))
            self.headers.append((method, path, {k.lower(): v for k, v in h.headers.items()}))
        fault = self._pick(method, path)
        if fault is not None and fault.kind == "redirect":
            self._record(method, path, "fault redirect")
            h.send_response(307)
            h.send_header("Location", fault.location + path)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if fault is not None and fault.kind == "status":
            self._record(method, path, f"fault {fault.status}")
            code = b"UNAVAILABLE" if fault.status >= 500 else b"UNSUPPORTED"  # a 4xx is not a temporary fault
            payload = b'{"errors":[{"code":"' + code + b'","message":"injected fault"}]}'
            if fault.status == 429:
                payload = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}'
            if fault.body is not None:
                payload = fault.body
            h.send_response(fault.status)
            if fault.retry_after is not None:
                h.send_header("Retry-After", fault.retry_after)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(0 if method == "HEAD" else len(payload)))
            h.end_headers()
            if method != "HEAD":
                h.wfile.write(payload)
            return
        if fault is not None and fault.kind == "reset":
            self._record(method, path, "fault reset")
            _reset(h)
            return
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.delay)
        status, headers, data = self._forward(h, method, path, body)
        outcome = str(status)
        if fault is not None and fault.kind == "corrupt" and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
            outcome = f"fault corrupt {status}"
        if fault is not None and fault.kind in ("reset_mid_body", "truncate") and len(data) > 1:
            self._record(method, path, f"fault {fault.kind}")
            h.send_response(status)
            for k, v in headers:
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            if fault.kind == "reset_mid_body":
                _reset(h)
            else:
                h.close_connection = True
            return
        if fault is not None and fault.kind == "relocate":
            moved = urlsplit(fault.location)
            headers = [(k, urlunsplit((moved.scheme, moved.netloc) + tuple(urlsplit(v))[2:]) if k.lower() == "location"
                        else v) for k, v in headers]
            outcome = f"fault relocate {status}"
        if fault is not None and fault.kind == "header":
            headers = [(k, v) for k, v in headers if k.lower() not in {n.lower() for n, _ in fault.headers}]
            headers += list(fault.headers)
            outcome = f"fault header {status}"
        self._record(method, path, outcome)
        h.send_response(status)
        for k, v in headers:
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data) if method != "HEAD" else _length(headers, data)))
        h.end_headers()
        if method != "HEAD" and data:
            h.wfile.write(data)

    def _forward(self, h, method: str, path: str, body: bytes):
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP}
            if self.upstream_authorization is not None:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                headers["Authorization"] = self.upstream_authorization
            headers["Content-Length"] = str(len(body))
            conn.request(method, path, body=body if body or method in ("POST", "PUT", "PATCH") else None,
                         headers=headers)
            resp = conn.getresponse()
            data = resp.read() if method != "HEAD" else b""
            out = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP | {"content-length"}]
            if method == "HEAD" and resp.getheader("Content-Length"):
                out.append(("X-Upstream-Length", resp.getheader("Content-Length")))
            return resp.status, out, data
        finally:
            conn.close()


def _length(headers, data: bytes) -> int:
    for k, v in headers:
        if k == "X-Upstream-Length":
            return int(v)
    return len(data)


def _read_body(h: BaseHTTPRequestHandler) -> bytes:
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                h.rfile.readline()
                break
            chunks.append(h.rfile.read(size))
            h.rfile.readline()
        return b"".join(chunks)
    length = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(length) if length else b""


def _reset(h: BaseHTTPRequestHandler) -> None:
    """Close with RST (SO_LINGER 0): the client sees ECONNRESET, not a clean EOF."""
    h.close_connection = True
    try:
        h.wfile.flush()
    except OSError:
        pass
    sock = h.connection
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass
