"""Which errors are the user's: the exit code and the one-line message the command line reports them with.

A bad argument or input (``ValueError``, including ``jaxseg.checkpoint.UnreadableFileError`` for files that
cannot be read, and the ``OSError``s of missing, blocked, read-only or wrong-kind paths) is the user's: exit code
2. Other ``OSError``s (a full disk, an I/O error) are the machine's: exit code 1. Anything else is a bug, reported
with its traceback. A ``Stopped`` run (not an error) exits with its own status.
"""

from __future__ import annotations

import errno
import os

DEBUG_ENVIRONMENT = "JAXSEG_DEBUG"  # set to 1 to see the traceback of reported errors too
# OSErrors that mean a path the user gave is missing, blocked, read-only or of the wrong kind.
_USER_ERRNOS = ("ENOENT", "EEXIST", "EACCES", "EPERM", "EROFS", "ENOTDIR", "EISDIR", "ENAMETOOLONG", "ELOOP",
                "ENOTEMPTY")


class Stopped(RuntimeError):
    """A run stopped before its end for a reason that is not an error of the code (e.g. a pre-emption); the
    command reports the message and exits with ``exit_status``."""

    exit_status = 1


def exit_code(error: BaseException) -> int | None:
    """2 for a bad argument or input, 1 for other ``OSError``s, ``exit_status`` for a ``Stopped`` run, None for
    anything else (a bug)."""
    if isinstance(error, Stopped):
        return error.exit_status
    if isinstance(error, ValueError):
        return 2
    if isinstance(error, (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
                          NotADirectoryError)):
        return 2
    if isinstance(error, OSError):
        user = {getattr(errno, name) for name in _USER_ERRNOS if hasattr(errno, name)}
        return 2 if error.errno in user else 1
    return None


def describe(error: BaseException) -> str:
    """One readable line (or block) for ``error``: an OSError as 'PATH: reason', else its message."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        target = f" -> {error.filename2}" if error.filename2 is not None else ""
        return f"{error.filename}{target}: {error.strerror}"
    return str(error) or type(error).__name__


def debug_from_environment() -> bool:
    """Whether ``JAXSEG_DEBUG`` asks for tracebacks (any value but empty, 0, false, no)."""
    return os.environ.get(DEBUG_ENVIRONMENT, "").strip().lower() not in ("", "0", "false", "no")
