"""Errors a user can cause or fix: one hierarchy for the Python API and the `conjure` command.

The API raises these and knows no terminal; the command prints any of them as one line
(never a traceback) and exits with its `exit_code` (cli/main.py, in one place).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


class ConjureError(Exception):
    """Something the user can fix: exit code 1."""

    exit_code = 1


class UsageError(ConjureError):
    """A malformed flag or argument: exit code 2, and nothing was started."""

    exit_code = 2


class NotFoundError(ConjureError):
    """A run, pipeline, machine or resource that does not exist."""


class ConflictError(ConjureError):
    """It exists, but its state refuses the request: a run that already ended, a pipeline
    still running, an upload name already taken."""


class UnreachableError(ConjureError):
    """A server Conjure needs does not answer: Temporal, the Docker engine."""


class ConfigError(ConjureError):
    """Conjure's own configuration (config.toml, a catalog) is invalid."""


class RunFailedError(ConjureError):
    """A run ended other than Complete where the caller asked for success
    (`run.wait(check=True)`); `status` is the run's final RunStatus."""

    def __init__(self, message: str, status: Any = None) -> None:
        super().__init__(message)
        self.status = status


class OptionError(UsageError):
    """A bad value of one option, named as the Python API names it (`pip`, `pip_req`,
    `conda_file`, ...): `option` is the option and `detail` what is wrong with it. With
    `also`, the detail is the whole message and names the options as {0} (this one),
    {1}, ... `str()` uses the Python API's names; the CLI words the same error with its
    flags (`worded`)."""

    def __init__(self, option: str, detail: str, *, also: Sequence[str] = ()) -> None:
        self.option = option
        self.detail = detail
        self.also = tuple(also)
        super().__init__(self.worded(str))

    def worded(self, name: Callable[[str], str]) -> str:
        if self.also:
            return self.detail.format(name(self.option), *map(name, self.also))
        return f"{name(self.option)}: {self.detail}"
