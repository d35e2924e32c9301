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
    """A Dockerfile problem; the message names the file and line.

    ``source_text`` (the Dockerfile's text, when known) lets the CLI print the lines
    around ``line``..``end_line`` as BuildKit does.
    """

    source_text: str | None = None

    def __init__(self, message: str, *, path: str = "Dockerfile", line: int | None = None,
                 end_line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.end_line = end_line if end_line is not None else line
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


class InstructionError(BuildError, DockerfileError):
    """Executing one instruction failed: the message names its file and line, and
    ``exit_code``/``temporary`` are those of the error underneath (a failing RUN's status)."""

    def __init__(self, message: str, *, path: str, line: int, end_line: int | None = None,
                 exit_code: int = 1, temporary: bool = False, source_text: str | None = None) -> None:
        DockerfileError.__init__(self, message, path=path, line=line, end_line=end_line)
        self.exit_code = exit_code
        self.temporary = temporary
        self.source_text = source_text


def at_instruction(error: BaseException, *, path: str, line: int, end_line: int | None = None,
                   source_text: str | None = None) -> PybuildlessError:
    """``error`` (an expected error or an OSError) as an InstructionError naming the
    instruction at ``path:line``; one that already names a Dockerfile line keeps it."""
    if isinstance(error, InstructionError):
        return error
    if isinstance(error, DockerfileError) and error.line is not None:
        if error.path != path:  # e.g. an ONBUILD trigger: point at the instruction that ran it
            message = str(error)
        else:
            return InstructionError(error.bare_message, path=path, line=error.line, end_line=error.end_line,
                                    exit_code=error.exit_code, temporary=error.temporary, source_text=source_text)
    elif isinstance(error, OSError):
        where = f": {error.filename}" if getattr(error, "filename", None) else ""
        message = f"{error.strerror or error}{where}"
    else:
        message = getattr(error, "bare_message", None) or str(error)
        message = message.removeprefix(f"{path}:{line}: ")  # already named the line itself
    return InstructionError(message, path=path, line=line, end_line=end_line,
                            exit_code=getattr(error, "exit_code", 1), temporary=getattr(error, "temporary", False),
                            source_text=source_text)


class SandboxError(PybuildlessError):
    """The chosen isolation cannot be set up here; the message says what is missing."""
