"""How the CLI words errors of the Python API that name its options."""

from __future__ import annotations

from conjure.infra.errors import OptionError

# Options of the Python API that are settings (config.toml, CONJURE_*), not flags.
_SETTINGS = frozenset({"registry"})


def option_flag(option: str) -> str:
    """The flag of a Python API option: `pip_req` -> `--pip-req`."""
    return option if option in _SETTINGS else "--" + option.replace("_", "-")


def error_message(e: Exception) -> str:
    """One line for the user: an OptionError names the CLI's flags, anything else says
    what it says."""
    return e.worded(option_flag) if isinstance(e, OptionError) else str(e)
