"""The error hierarchy.

Every error the user can cause or meet derives from ``PybuildlessError``; the CLI
turns these into one clear line and a non-zero exit code, never a traceback.
``temporary`` marks errors worth retrying (network faults, 5xx, 429).
"""

from __future__ import annotations


class PybuildlessError(Exception):
    """Root of all expected errors."""

    temporary: bool = False
    exit_code: int = 1

    def __init__(self, message: str, *, temporary: bool | None = None) -> None:
        super().__init__(message)
        if temporary is not None:
            self.temporary = temporary


class UsageError(PybuildlessError):
    """A bad flag or flag value; the message names the flag."""

    exit_code = 2


class ReferenceError_(PybuildlessError):
    """An invalid image reference."""


class DockerfileError(PybuildlessError):
    """A Dockerfile problem; the message names the file and line."""

    def __init__(self, message: str, *, path: str = "Dockerfile", line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")
        self.bare_message = message


class RegistryError(PybuildlessError):
    """A registry answered with an error, or could not be reached.

    ``url`` is already redacted; ``codes`` are the registry's error codes
    (e.g. ``MANIFEST_UNKNOWN``) from the response body.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        method: str | None = None,
        url: str | None = None,
        codes: tuple[str, ...] = (),
        temporary: bool | None = None,
    ) -> None:
        self.status = status
        self.method = method
        self.url = url
        self.codes = codes
        super().__init__(message, temporary=temporary)


class AuthError(RegistryError):
    """Credentials missing, wrong, or insufficient for the requested scope."""


class NotFoundError(RegistryError):
    """Manifest, blob or repository unknown."""


class DigestMismatchError(PybuildlessError):
    """Content did not match the digest or size it was announced with."""


class ImageFormatError(PybuildlessError):
    """A manifest, config, layout or tarball that does not follow the formats."""


class LayerSecurityError(PybuildlessError):
    """A layer tried to write outside the root, or onto a protected path."""


class BuildError(PybuildlessError):
    """A build step failed. ``exit_code`` carries a failing RUN's status."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class SandboxError(PybuildlessError):
    """The chosen isolation cannot be set up here; the message says what is missing."""
