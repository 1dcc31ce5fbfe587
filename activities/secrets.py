"""The control worker's secret activity: a final run's stored values are deleted."""

from __future__ import annotations

from temporalio import activity

from conjure.activities.store_backed import StoreBacked
from conjure.infra.secrets import forget_secrets
from conjure.workflows.activity_defs import SecretActivityDefs
from conjure.workflows.models import ForgetSecretsInput


class SecretActivities(StoreBacked, SecretActivityDefs):
    @activity.defn(name="forget_secrets")
    def forget_secrets(self, inp: ForgetSecretsInput) -> bool:
        return forget_secrets(self.store, inp.key)
