"""Logging setup for the CLI and a filter that keeps secrets out of every record.

Library modules only call ``logging.getLogger(__name__)``; the CLI calls
``setup_logging``. Secrets (passwords, tokens, helper output) are registered
with ``register_secret`` as soon as they are read, and ``RedactingFilter``
scrubs them, ``Authorization`` headers and token-looking query parameters from
the message, its arguments and any exception text, whatever the verbosity.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from typing import Literal

from pybuildless import transfer

ROOT_LOGGER = "pybuildless"
REDACTED = "[REDACTED]"
TRACE = 5
logging.addLevelName(TRACE, "TRACE")

# Kaniko's (logrus) verbosity names.
LEVELS = {
    "panic": logging.CRITICAL,
    "fatal": logging.CRITICAL,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_secret_pattern: re.Pattern[str] | None = None

# Header values and query/form parameters that carry credentials whatever their value.
_GENERIC = [
    (re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(basic|bearer)\s+[^\s\"',}]+"), rf"\1\2 {REDACTED}"),
    (re.compile(r"(?i)\b(basic|bearer)\s+[A-Za-z0-9._~+/=-]{16,}"), rf"\1 {REDACTED}"),
    (
        re.compile(
            r"(?i)([?&\s\"']?(?:access_token|refresh_token|token|password|secret|identitytoken|registrytoken|"
            r"_state|X-Amz-Signature|X-Amz-Credential|Signature|sig)[\"']?\s*[=:]\s*[\"']?)[^&\s\"',}]+"
        ),
        rf"\1{REDACTED}",
    ),
    # JWTs (registry bearer tokens) wherever they appear
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), REDACTED),
    # user:password@ in URLs
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@"), rf"\1{REDACTED}@"),
]


def register_secret(value: str | bytes | None) -> None:
    """Remember a secret so every later log record has it replaced."""
    global _secret_pattern
    if not value:
        return
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    # Very short values would redact ordinary words; real secrets are longer.
    if len(value) < 4:
        return
    with _secrets_lock:
        if value in _secrets:
            return
        _secrets.add(value)
        ordered = sorted(_secrets, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(re.escape(s) for s in ordered))


def redact(text: str) -> str:
    """``text`` with registered secrets and credential-looking fragments replaced."""
    if not text:
        return text
    pattern = _secret_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    for rx, repl in _GENERIC:
        text = rx.sub(repl, text)
    return text


class RedactingFilter(logging.Filter):
    """Formats the record's message once, redacts it, and drops the raw arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not hide the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Format the traceback now so the formatter never renders unredacted text.
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(text)
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "level": _level_name(record.levelno),
            "msg": record.getMessage(),
            "logger": record.name,
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
        }
        if record.exc_text:
            doc["error"] = record.exc_text
        source = getattr(record, "dockerfile", None)
        if source is not None:
            doc["dockerfile"] = source
        return json.dumps(doc)


_COLOURS = {logging.DEBUG: "\x1b[37m", TRACE: "\x1b[37m", logging.INFO: "\x1b[36m", logging.WARNING: "\x1b[33m"}


class TextFormatter(logging.Formatter):
    def __init__(self, *, colour: bool, timestamps: bool) -> None:
        super().__init__()
        self.colour = colour
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        level = _level_name(record.levelno).upper()[:4]
        if self.colour:
            level = f"{_COLOURS.get(record.levelno, chr(27) + '[31m')}{level}\x1b[0m"
        prefix = f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} " if self.timestamps else ""
        source = getattr(record, "dockerfile", None)
        # An error's place in the Dockerfile is shown as BuildKit shows it; the message itself
        # is the command's final error line.
        message = "\n".join(source["excerpt"]) if source and source.get("excerpt") else record.getMessage()
        text = f"{prefix}{level}[{record.name.removeprefix(ROOT_LOGGER + '.')}] {message}"
        if record.exc_text:
            text += "\n" + record.exc_text
        return text


class ConsoleHandler(logging.StreamHandler):
    """A stream handler that hides the live transfer lines (``pybuildless.transfer``)
    while it writes a record, so a record never lands in the middle of them."""

    def emit(self, record: logging.LogRecord) -> None:
        with transfer.paused():
            super().emit(record)


def report_error_source(error: BaseException, logger: logging.Logger | None = None) -> None:
    """Log where in the Dockerfile ``error`` happened, when it says (``path``, ``line``): an
    excerpt of the lines in text logs, a ``dockerfile`` field (file, line, end_line, excerpt)
    in JSON logs. Errors without a Dockerfile line log nothing here."""
    line = getattr(error, "line", None)
    path = getattr(error, "path", None)
    if not isinstance(line, int) or not isinstance(path, str):
        return
    from pybuildless.dockerfile.excerpt import excerpt

    end = getattr(error, "end_line", None) or line
    text = getattr(error, "source_text", None)
    if text is None:
        try:  # an error raised before the text was at hand (stage planning): read the file
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, ValueError):
            text = None
    lines = excerpt(text, path, line, end) if text else []
    field = {"file": path, "line": line, "end_line": end, "excerpt": lines}
    (logger or logging.getLogger(ROOT_LOGGER + ".build")).error("%s", error, extra={"dockerfile": field})


def _level_name(levelno: int) -> str:
    if levelno <= TRACE:
        return "trace"
    return logging.getLevelName(levelno).lower().replace("warning", "warn")


def setup_logging(
    verbosity: str = "info",
    fmt: Literal["text", "color", "json"] = "text",
    timestamps: bool = False,
    stream=None,
) -> logging.Logger:
    """Configure the ``pybuildless`` logger; replaces handlers from an earlier call."""
    level = LEVELS.get(verbosity.lower())
    if level is None:
        from pybuildless.errors import UsageError

        raise UsageError(f"--verbosity: unknown level {verbosity!r} (one of {', '.join(sorted(set(LEVELS)))})")
    if fmt not in ("text", "color", "json"):
        from pybuildless.errors import UsageError

        raise UsageError(f"--log-format: unknown format {fmt!r} (text, color or json)")
    logger = logging.getLogger(ROOT_LOGGER)
    for handler in list(logger.handlers):
        if getattr(handler, "_pybuildless", False):
            logger.removeHandler(handler)
    handler = ConsoleHandler(stream if stream is not None else sys.stderr)
    handler._pybuildless = True  # type: ignore[attr-defined]
    handler.addFilter(RedactingFilter())
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(TextFormatter(colour=fmt == "color", timestamps=timestamps))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    # urllib3 logs request lines with full URLs (tokens in query strings): keep it quiet
    # unless tracing, and redact it too.
    urllib3_logger = logging.getLogger("urllib3")
    urllib3_logger.setLevel(logging.DEBUG if level <= TRACE else logging.WARNING)
    for h in list(urllib3_logger.handlers):
        if getattr(h, "_pybuildless", False):
            urllib3_logger.removeHandler(h)
    if level <= TRACE:
        urllib3_logger.addHandler(handler)
    return logger


def reset_logging() -> None:
    """Undo ``setup_logging`` (tests that configure logging in-process call this afterwards)."""
    for name in (ROOT_LOGGER, "urllib3"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if getattr(handler, "_pybuildless", False):
                logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    logging.getLogger(ROOT_LOGGER).propagate = True


def install_filter(logger: logging.Logger | None = None) -> RedactingFilter:
    """Add a RedactingFilter to every handler of ``logger`` (tests capture through their own handlers)."""
    f = RedactingFilter()
    for h in (logger or logging.getLogger(ROOT_LOGGER)).handlers:
        h.addFilter(f)
    return f


logging.getLogger(ROOT_LOGGER).addHandler(logging.NullHandler())
