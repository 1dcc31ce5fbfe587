"""A base for control-worker activities that need the object store: opened once, on
first use, from the settings (tests pass a store of their own)."""

from __future__ import annotations

from conjure.infra.config import Settings
from conjure.infra.store import Store, open_store


class StoreBacked:
    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self._store = store

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.settings.store, self.settings)
        return self._store
