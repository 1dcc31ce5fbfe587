"""The control worker's secret activity: a final run's stored values are deleted."""

from __future__ import annotations

from temporalio import activity

from conjure.infra.config import Settings
from conjure.infra.secrets import forget_secrets
from conjure.infra.store import Store, open_store
from conjure.workflows.activity_defs import SecretActivityDefs
from conjure.workflows.models import ForgetSecretsInput


class SecretActivities(SecretActivityDefs):
    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self._store = store

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.settings.store, self.settings)
        return self._store

    @activity.defn(name="forget_secrets")
    def forget_secrets(self, inp: ForgetSecretsInput) -> bool:
        return forget_secrets(self.store, inp.key)
