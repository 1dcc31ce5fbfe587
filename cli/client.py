"""The connection every part of the Python API works through: settings, the Temporal
client (the embedded stack started on first use), the store and the machine catalog."""

from __future__ import annotations

from temporalio.client import Client

from conjure.infra import stack
from conjure.infra.catalog import load_catalog
from conjure.infra.config import Settings, get_settings
from conjure.infra.errors import ConjureError, UnreachableError
from conjure.infra.store import Store, StoreError, open_store
from conjure.infra.temporal import ServerUnreachable, make_client
from conjure.workflows.models import MachineType, RunOptions


class Connection:
    """Opened lazily: nothing is contacted before a call needs it."""

    def __init__(self, settings: Settings | None = None, *, autostart: bool = True) -> None:
        self.settings = settings or get_settings()
        self.autostart = autostart
        self._client: Client | None = None
        self._store: Store | None = None
        self._catalog: dict[str, MachineType] | None = None
        self.started_stack: stack.UpReport | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            try:
                self._store = open_store(self.settings.store, self.settings)
            except StoreError as e:
                raise ConjureError(str(e)) from None
        return self._store

    @property
    def catalog(self) -> dict[str, MachineType]:
        if self._catalog is None:
            self._catalog = load_catalog(self.settings.home / "config.toml")
        return self._catalog

    async def client(self) -> Client:
        if self._client is None:
            if self.autostart and self.settings.embedded:
                self.started_stack = await stack.ensure_up(self.settings)
            try:
                self._client = await make_client(self.settings)
            except ServerUnreachable as e:
                hint = " (start it with `conjure up`)" if self.settings.embedded else ""
                raise UnreachableError(f"{e}{hint}") from None
        return self._client

    def run_options(self) -> RunOptions:
        """The settings a run workflow carries with it."""
        return RunOptions(
            **{name: getattr(self.settings, name) for name in RunOptions.model_fields}
        )
