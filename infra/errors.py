"""Errors a user can cause or fix. The CLI prints them as one line, never a traceback."""

from __future__ import annotations

from typing import Any


class ConjureError(Exception):
    """Something the user can fix: exit code 1."""

    exit_code = 1


class UsageError(ConjureError):
    """A malformed flag or argument: exit code 2, and nothing was started."""

    exit_code = 2


class RunFailedError(ConjureError):
    """A run ended other than Complete where the caller asked for success
    (`run.wait(check=True)`); `status` is the run's final RunStatus."""

    def __init__(self, message: str, status: Any = None) -> None:
        super().__init__(message)
        self.status = status
