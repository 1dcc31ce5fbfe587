"""The machine-type catalog: `infra/machine_types.toml` plus the user's additions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from conjure.workflows.models import MachineType

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CATALOG_FILE = Path(__file__).with_name("machine_types.toml")


class UnknownMachineType(Exception):
    pass


def builtin_with_overrides(
    builtin: Path, config_file: Path | None, table: str
) -> dict[str, dict[str, Any]]:
    """A built-in TOML catalog (NAME -> fields), each entry overridden field by field or
    added by `[TABLE.NAME]` in the user's config file."""
    raw: dict[str, Any] = tomllib.loads(builtin.read_text())
    if config_file is not None and config_file.exists():
        user = tomllib.loads(config_file.read_text()).get(table, {})
        for name, fields in user.items():
            raw[name] = {**raw.get(name, {}), **fields}
    return raw


def load_catalog(config_file: Path | None = None) -> dict[str, MachineType]:
    """The built-in types, overridden or extended by `[machine_types.NAME]` in config."""
    raw = builtin_with_overrides(CATALOG_FILE, config_file, "machine_types")
    return {name: MachineType(name=name, **fields) for name, fields in raw.items()}


def lookup(name: str, catalog: dict[str, MachineType]) -> MachineType:
    try:
        return catalog[name]
    except KeyError:
        known = ", ".join(catalog)
        raise UnknownMachineType(f"unknown machine type {name!r}; known types: {known}") from None
