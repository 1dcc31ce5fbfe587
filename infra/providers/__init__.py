"""Machine providers behind one small interface: provision, terminate, list, describe.

Each provider is a module of plain functions taking and returning cloud-neutral
records; every instance is tagged with its Conjure machine id, and `provision`
first looks for an instance with that tag, so a retried call never makes two.
"""

from __future__ import annotations

import importlib
from types import ModuleType

PROVIDERS = ("local", "ssh", "aws", "gcp", "azure")


def get_provider(name: str) -> ModuleType:
    if name not in PROVIDERS:
        raise ValueError(f"unknown provider {name!r}; known providers: {', '.join(PROVIDERS)}")
    return importlib.import_module(f"conjure.infra.providers.{name}")
