"""Errors a user can cause or fix. The CLI prints them as one line, never a traceback."""


class ConjureError(Exception):
    """Something the user can fix: exit code 1."""

    exit_code = 1


class UsageError(ConjureError):
    """A malformed flag or argument: exit code 2, and nothing was started."""

    exit_code = 2
