"""Checks of flag values that apply to every command starting a run.

An empty value (`--machine-type ''`) is a mistake, never "use the default", and a
control character (a newline pasted into `--mount`) is never silently dropped:
both are usage errors (exit 2) before anything starts.
"""

from __future__ import annotations

from collections.abc import Iterable

from conjure.infra.errors import UsageError


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_value(flag: str, value: str | None) -> None:
    """A flag's value: None (not given) is fine; empty or with a control character is not."""
    if value is None:
        return
    if not value.strip():
        raise UsageError(f"{_flag(flag)}: the value is empty")
    bad = next((ch for ch in value if ord(ch) < 32 or ord(ch) == 127), None)
    if bad is not None:
        raise UsageError(f"{_flag(flag)} {value!r}: contains a control character ({bad!r})")


def check_values(**flags: str | Iterable[str] | None) -> None:
    """Each flag's value, or each value of a repeatable flag (a sequence)."""
    for flag, value in flags.items():
        if value is None or isinstance(value, str):
            check_value(flag, value)
            continue
        for item in value:
            check_value(flag, str(item))


# Container paths a mount must not land on: the kernel's own file systems, and the
# run's workspace and Conjure's metadata folder (bound by the agent itself).
RESERVED_DESTINATIONS = ("/proc", "/sys", "/dev", "/run/conjure")
WORKSPACE_ROOT = "/conjure"


def reserved_destination(dest: str) -> str | None:
    """The reserved folder `dest` is (or is under), or None. `dest` is normalised."""
    if dest in ("/", WORKSPACE_ROOT):
        return dest
    for root in RESERVED_DESTINATIONS:
        if dest == root or dest.startswith(root + "/"):
            return root
    return None
